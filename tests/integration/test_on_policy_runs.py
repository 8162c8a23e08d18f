"""DPO on on-policy pairs (data.pairs=on_policy) from a short SFT run: the pairs are the SFT model's own
samples, flips swap them, and a second preference run from the same model reuses the cached samples."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assay.models.onpolicy import CACHE, choose_pair
from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=none", "eval.val_generate=false"]
ON_POLICY = ["data.format=preference", "data.pairs=on_policy", "data.pair_samples=4", "noise=pairwise_flip", "noise.p=0.3", "dynamics=losses"]


def test_dpo_on_on_policy_pairs_from_a_short_sft_run(tmp_path):
    from assay.dynamics.store import read_store

    sft = run_in_hydra([*FAST, "trainer.max_steps=8"], tmp_path / "sft")
    assert sft["status"] == "completed"
    cache = Path(os.environ["ASSAY_CACHE"]) / CACHE
    before = set(cache.glob("*.json")) if cache.is_dir() else set()

    dpo = run_in_hydra([*FAST, *ON_POLICY, "objective=dpo", f"model.init_from={tmp_path / 'sft'}"], tmp_path / "dpo")
    assert dpo["status"] == "completed" and {"test/pref_acc", "test/answer_reward"} <= set(dpo["metrics"])
    written = set(cache.glob("*.json")) - before
    assert len(written) == 1  # one sampling pass, keyed by the SFT weights and the settings
    samples = json.loads(written.pop().read_text())
    assert len(samples["ids"]) == 120 and all(len(s) == 4 for s in samples["samples"])
    # the run trained on exactly the prompts whose samples do not all tie (the rule checked by hand in the unit tests)
    answers = dict(zip(*_train_answers(tmp_path)))
    paired = [i for i, s in zip(samples["ids"], samples["samples"]) if choose_pair(answers[i], s) is not None]
    assert 0 < dpo["data"]["train_examples"] == len(paired) <= 120
    store = read_store(tmp_path / "dpo" / "dynamics")
    assert store["is_flipped"].any() and set(store["id"]) <= set(paired)
    # the pairs as trained, to join with the store: a flipped pair's chosen reward is the lower one, its gap stays the true one
    trained = pd.read_parquet(tmp_path / "dpo" / "train_pairs.parquet")
    assert sorted(trained["id"]) == sorted(paired) and trained["is_flipped"].any()
    sign = np.where(trained["is_flipped"], -1.0, 1.0)
    assert np.allclose(sign * (trained["chosen_reward"] - trained["rejected_reward"]), trained["reward_gap"]) and (trained["reward_gap"] > 0).all()

    # another objective from the same SFT model: the samples come from the cache, nothing new is written
    again = run_in_hydra([*FAST, *ON_POLICY, "objective=rdpo", f"model.init_from={tmp_path / 'sft'}"], tmp_path / "rdpo")
    assert again["status"] == "completed" and again["data"]["train_examples"] == dpo["data"]["train_examples"]
    assert len(set(cache.glob("*.json")) - before) == 1


def _train_answers(tmp_path):
    from assay.config import validate
    from assay.data.examples import load_pool
    from tests.conftest import compose_config

    spec = validate(compose_config([*FAST, *ON_POLICY, "objective=dpo", f"model.init_from={tmp_path / 'sft'}"], tmp_path / "compose"))
    train = load_pool(spec.data, spec.mixture)["train"]
    return list(train["id"]), list(train["answer"])
