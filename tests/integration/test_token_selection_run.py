"""End-to-end RHO-1 (Selective Language Modeling) runs: token selection against a cached reference, per-sample
shares of kept tokens in the dynamics store, on a weighted data mixture."""

import pytest

from tests.conftest import run_in_hydra

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=none", "eval.val_generate=false", "trainer.max_steps=2"]


def test_rho1_records_the_share_of_kept_tokens_per_sample(tmp_path):
    from assay.dynamics.store import read_store

    summary = run_in_hydra([*FAST, "objective=rho1", "objective.keep_ratio=0.5", "dynamics=losses",
                            "mixture=weights", "mixture.weights={copy:2,reverse:1,sort:1,count:1,add:1}"], tmp_path)
    assert summary["status"] == "completed" and summary["choices"]["objective"] == "rho1"
    assert summary["reference_logps"] != {}  # the reference's per-token log-probs, from the cache
    assert {"test/loss", "test/nll", "test/kept_share"} <= set(summary["metrics"])
    records = read_store(tmp_path / "dynamics")
    assert len(records) == 2 * 8 and {"kept_share", "excess", "nll", "loss"} <= set(records.columns)
    assert records["kept_share"].between(0, 1).all() and records["kept_share"].nunique() > 1


def test_rho1_scores_with_a_reference_trained_first(tmp_path):
    """The paper's recipe: a reference trained first (here a few SFT steps), the policy starting afresh."""
    from assay.dynamics.store import read_store

    reference = tmp_path / "reference"
    assert run_in_hydra([*FAST, "objective=sft", "trainer.max_steps=4", "optim.lr=3e-3"], reference)["status"] == "completed"
    out = tmp_path / "rho1"
    summary = run_in_hydra([*FAST, "objective=rho1", f"objective.reference_from={reference}"], out)
    assert summary["status"] == "completed"
    records = read_store(out / "dynamics")
    # a reference other than the start: the excess losses differ from 0 at the first step already
    first = records[records["step"] == records["step"].min()]
    assert (first["excess"].abs() > 1e-4).all()
    # the cache holds the trained reference's log-probs, not the starting policy's
    plain = run_in_hydra([*FAST, "objective=rho1"], tmp_path / "plain")
    assert plain["reference_logps"]["train"] != summary["reference_logps"]["train"]
    plain_first = read_store(tmp_path / "plain" / "dynamics")
    assert (plain_first[plain_first["step"] == plain_first["step"].min()]["excess"].abs() < 1e-4).all()
