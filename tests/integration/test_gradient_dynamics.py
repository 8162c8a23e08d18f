"""dynamics=gradients: the per-sample gradient features recorded during training are those of the
weights and optimizer state the checkpoint of the same step holds."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from assay.config import validate
from assay.data import build_examples
from assay.data.collate import tokenize_split
from assay.dynamics.checkpoints import load_checkpoint
from assay.models.grads import adam_precondition, grad_param_names, gradient_features
from assay.models.projection import project
from assay.dynamics.store import read_gradients, read_store
from assay.paths import CONF_DIR
from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
RUN = [
    "debug=fast", "trainer.enable_progress_bar=false",
    "dynamics=gradients", "dynamics.grad_every_n_steps=2", "dynamics.proj_dim=256", "dynamics.adam=true", "dynamics.batch_size=3",
    "checkpoint_every_n_steps=2", "keep_checkpoints=true",
]


def rebuild(overrides):
    """The run's tokenized training split and a model of its architecture, built as the run builds them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        spec = validate(compose(config_name="train", overrides=overrides))
    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    d = spec.data
    return spec, tokenize_split(examples.splits["train"], tokenizer, d.format, d.separator, d.max_length), model, tokenizer


def test_recorded_features_are_the_checkpoints_adam_preconditioned_projected_gradients(tmp_path):
    run_in_hydra(RUN, tmp_path)
    rec = read_gradients(tmp_path / "dynamics" / "gradients")
    losses = read_store(tmp_path / "dynamics")
    assert sorted(rec.index["step"].unique()) == [2, 4] and len(rec) == 2 * 8 and rec.dim == 256
    assert not rec.index.duplicated(["id", "step"]).any()
    for step in (2, 4):  # the very examples trained at that step
        assert sorted(rec.index[rec.index.step == step]["id"]) == sorted(losses[losses.step == step]["id"])

    spec, train, model, tokenizer = rebuild(RUN)
    names = grad_param_names(model)
    row_of = {i: r for r, i in enumerate(train["id"])}
    for step in (2, 4):
        at = rec.index[rec.index.step == step]
        _, moments = load_checkpoint(model, tmp_path / "checkpoints" / f"step={step:06d}.ckpt", names)
        assert moments is not None
        exact = gradient_features(model, train.select([row_of[i] for i in at["id"]]), tokenizer.pad_token_id, names, batch_size=8)
        assert torch.allclose(torch.tensor(at["grad_norm"].to_numpy(), dtype=torch.float32), exact.norm(dim=1), rtol=1e-4)
        expected = project(adam_precondition(exact, *moments, betas=tuple(spec.optim.betas)), 256, seed=0, kind="sjlt")
        got = torch.from_numpy(rec.features(at))
        assert torch.allclose(got, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max())), float((got - expected).abs().max())


@pytest.mark.cli
def test_accumulated_micro_batches_are_recorded_under_the_step_they_train(tmp_path):
    """With 3 micro-batches of 8 per optimizer step, each step has 24 loss records and, where
    gradients are due, 24 gradient records, all at the weights after that step."""
    run = [*RUN, "trainer.accumulate_grad_batches=3", "dynamics.flush_every=2"]
    run_in_hydra(run, tmp_path)
    losses = read_store(tmp_path / "dynamics")
    assert losses.groupby("step").size().to_dict() == {1: 24, 2: 24, 3: 24, 4: 24}
    assert not losses.duplicated(["id", "step"]).any()
    rec = read_gradients(tmp_path / "dynamics" / "gradients")
    assert rec.index.groupby("step").size().to_dict() == {2: 24, 4: 24}
    for step in (2, 4):
        assert sorted(rec.index[rec.index.step == step]["id"]) == sorted(losses[losses.step == step]["id"])

    spec, train, model, tokenizer = rebuild(run)
    names = grad_param_names(model)
    row_of = {i: r for r, i in enumerate(train["id"])}
    at = rec.index[rec.index.step == 4]
    load_checkpoint(model, tmp_path / "checkpoints" / "step=000004.ckpt", names)
    exact = gradient_features(model, train.select([row_of[i] for i in at["id"]]), tokenizer.pad_token_id, names, batch_size=8)
    assert torch.allclose(torch.tensor(at["grad_norm"].to_numpy(), dtype=torch.float32), exact.norm(dim=1), rtol=1e-4)
