"""TR-DPO's live reference (objective.ref_sync): the sync against TRL's own, its schedule, its log-probs,
its place outside the optimizer and in checkpoints, and a short run."""

from __future__ import annotations

import copy

import datasets
import pytest
import torch

from assay.data.collate import Collator
from assay.errors import UserError, explain
from assay.objectives import reference
from assay.objectives.live_reference import LiveReference
from assay.objectives.losses.dpo import DPO
from assay.objectives.losses.ipo import IPO

from tests.unit.objectives.test_shared_prompt import pair_rows, tiny_model


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return other


@pytest.mark.parametrize("alpha", [0.6, 0.1, 1.0])
def test_sync_equals_trl_sync_target_model(alpha):
    trl_callbacks = pytest.importorskip("trl.trainer.callbacks", reason="TRL is the reference implementation: pip install -e '.[test]'")
    policy = tiny_model()
    live = LiveReference(policy, alpha, steps=1)
    policy = perturbed(policy, 0)  # the policy moved after the copy was made
    theirs = copy.deepcopy(live.model)
    trl_callbacks.SyncRefModelCallback._sync_target_model(policy, theirs, alpha)
    assert live.sync(policy, step=1)
    for (name, a), b in zip(live.model.named_parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-7, rtol=0), name


def test_sync_schedule_every_tau_steps_once_per_step_never_at_zero():
    policy = tiny_model()
    live = LiveReference(policy, 1.0, steps=3)
    synced = [step for step in [0, 1, 2, 3, 3, 4, 5, 6, 6, 7] if live.sync(policy, step)]
    assert synced == [3, 6] and int(live.synced_at) == 6
    resumed = LiveReference(policy, 1.0, steps=3)
    resumed.load_state_dict(live.state_dict())
    assert not resumed.sync(policy, 6) and resumed.sync(policy, 9)  # a resumed run does not repeat the sync at 6


def test_the_live_reference_stays_frozen_in_eval_mode_and_out_of_the_optimizer():
    from assay.config import EvalConfig, OptimConfig
    from assay.module import AssayModule

    policy = tiny_model()
    module = AssayModule(policy, None, DPO(ref_sync="soft", ref_sync_alpha=0.5, ref_sync_steps=2), OptimConfig(), EvalConfig())
    module.train()
    assert not module.live_reference.model.training and module.model.training
    assert all(not p.requires_grad for p in module.live_reference.parameters())
    state = module.state_dict()
    assert "live_reference.synced_at" in state and any(k.startswith("live_reference.model.") for k in state)
    optimised = {id(p) for p in module.model.parameters() if p.requires_grad}
    assert not optimised & {id(p) for p in module.live_reference.parameters()}
    assert AssayModule(policy, None, DPO(), OptimConfig(), EvalConfig()).live_reference is None


@pytest.mark.parametrize("share_prompt", [False, True])
@pytest.mark.parametrize("ld_alpha", [None, 0.5])
def test_live_log_probs_equal_the_cached_ones_of_the_same_weights(tmp_path, share_prompt, ld_alpha):
    from assay.config import EvalConfig, OptimConfig
    from assay.module import AssayModule

    policy = tiny_model().eval()
    rows = pair_rows(9)
    collation = {"share_prompt": share_prompt, "pack_factor": 2.0}
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list([{k: v for k, v in r.items() if not k.startswith("ref_")} for r in rows])})
    cached, _ = reference.attach_reference_logps(policy, splits, 0, 4, tmp_path, collation, heads=ld_alpha is not None)
    collate = Collator(0, "preference", with_generation=False, **collation)
    live_obj = IPO(ref_sync="hard", ld_alpha=ld_alpha, share_prompt=share_prompt)
    module = AssayModule(perturbed(policy, 1), None, live_obj, OptimConfig(), EvalConfig())
    module.live_reference.model.load_state_dict(policy.state_dict())  # the same weights as the cache's reference
    batch = collate([cached["train"][i] for i in range(len(rows))])
    live = module.with_reference({k: v for k, v in batch.items() if not k.startswith("ref_")})
    for key in [k for k in batch if k.startswith("ref_")]:
        assert torch.allclose(live[key], batch[key].float(), atol=1e-4), key
    with torch.no_grad():
        a = live_obj.from_scores(live_obj.scores(module.model, live)).loss
        b = IPO(ld_alpha=ld_alpha, share_prompt=share_prompt).from_scores(IPO(ld_alpha=ld_alpha, share_prompt=share_prompt).scores(module.model, batch)).loss
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides,key", [
    (["objective=dpo", "data.format=preference", "objective.ref_sync=sometimes"], "objective.ref_sync"),
    (["objective=dpo", "data.format=preference", "objective.ref_sync=soft", "objective.ref_sync_alpha=0"], "objective.ref_sync_alpha"),
    (["objective=dpo", "data.format=preference", "objective.ref_sync=soft", "objective.ref_sync_steps=0"], "objective.ref_sync_steps"),
    (["objective=dpo", "data.format=preference", "objective.ref_sync=soft", "model.lora.r=4"], "objective.ref_sync"),
    (["objective=simpo", "data.format=preference", "objective.ref_sync=soft"], "objective.ref_sync"),  # reference-free: no such field
])
def test_bad_ref_sync_is_one_line(compose_cfg, overrides, key):
    from assay.config import validate

    with pytest.raises(Exception) as err:
        validate(compose_cfg(overrides))
    line = explain(err.value)
    assert "\n" not in line and key in line, line


def test_sharding_strategies_are_refused(compose_cfg):
    from assay.config import validate

    with pytest.raises(UserError) as err:
        validate(compose_cfg(["objective=dpo", "data.format=preference", "objective.ref_sync=soft", "trainer=fsdp"]))
    assert "objective.ref_sync" in explain(err.value) and "trainer=ddp" in explain(err.value)


