"""A LoRA run's checkpoints hold the adapter and the optimizer state, not the frozen base; resuming
from one rebuilds the base, checks it is the same, and ends where the uninterrupted run ends."""

from pathlib import Path

import pytest
import torch

from assay.errors import UserError
from assay.run.frozen_base import MARKER
from tests.conftest import run_in_hydra, without_speed

pytestmark = pytest.mark.integration

COMMON = ["debug=fast", "model.lora.r=4", "data.max_train_examples=48", "trainer.val_check_interval=100", "eval.generate=false",
          "trainer.enable_progress_bar=false", "checkpoint_every_n_steps=3", "keep_checkpoints=true", "trainer.max_steps=6"]


def test_lora_checkpoint_leaves_the_base_out_and_resumes_to_the_uninterrupted_result(tmp_path: Path):
    full = run_in_hydra(COMMON, tmp_path / "full")
    middle = tmp_path / "full" / "checkpoints" / "step=000003.ckpt"
    ckpt = torch.load(middle, map_location="cpu", weights_only=False)
    weights = [k for k in ckpt["state_dict"] if k.startswith("model.")]
    assert weights and all("lora_" in k for k in weights), [k for k in weights if "lora_" not in k][:3]
    assert ckpt[MARKER]["keys"] > len(weights)  # the base's tensors outnumber the adapter's
    trainable = sum(len(group["params"]) for group in ckpt["optimizer_states"][0]["param_groups"])
    assert trainable == len(weights)  # the optimizer state of exactly the adapter

    again = run_in_hydra([*COMMON, f"ckpt_path='{middle}'"], tmp_path / "again")
    assert again["global_step"] == full["global_step"] == 6
    assert without_speed(again["metrics"]) == without_speed(full["metrics"])

    # another base (another seed initialises the tiny model differently) is refused, not trained on
    with pytest.raises(UserError, match="other base weights"):
        run_in_hydra([*COMMON, "seed=7", f"ckpt_path='{middle}'"], tmp_path / "other")
