"""The committed study specs (experiments/<name>/study.yaml) load, every arm composes with the current
conf/, the primary metric is one a run writes, every arm is in the declared family, and each study
has at least 6 seeds (the project's rule for a study)."""

from __future__ import annotations

from pathlib import Path

import pytest

import assay.study
from assay.study.spec import PLACEHOLDER

REPO = Path(__file__).resolve().parents[3]
STUDIES = ["online_mixing", "noisy_prefs_v2", "noisy_prefs_v3", "collaborative", "mixture_search", "selection_detection_v2", "mates", "mixture_search_v3", "colm", "fedbiot", "projektor", "cluster_less", "noisy_prefs_peers"]
RUN_METRIC_PREFIXES = ("test/", "val/")


@pytest.fixture(scope="module", params=STUDIES)
def spec(request):
    return assay.study.load(REPO / "experiments" / request.param)


def test_every_arm_composes(spec):
    assay.study.check_overrides(spec)


def test_primary_is_a_run_metric(spec):
    assert spec.primary.startswith(RUN_METRIC_PREFIXES), spec.primary
    assert spec.primary not in spec.secondary


def test_every_arm_is_in_a_declared_comparison(spec):
    assert spec.comparisons, "no declared comparison"
    covered = {d.arm for d in spec.comparisons} | {d.baseline for d in spec.comparisons if d.baseline}
    # an arm other arms build on (a recipe's intermediate stage, e.g. DoReMi's proxy) need not be compared itself
    stages = {m.group(0)[5:-1] for arm in spec.arms.values() for o in arm for m in PLACEHOLDER.finditer(o) if m.group(0).startswith("{run:")}
    assert set(spec.arms) <= covered | stages, sorted(set(spec.arms) - covered - stages)


def test_at_least_six_seeds(spec):
    assert len(spec.seeds) >= 6, spec.seeds


def test_placeholders_name_what_exists(spec):
    # load() already refuses unknown names; this pins the two dependencies the studies rely on
    refs = {m.group(0) for o in [o for arm in spec.arms.values() for o in arm] for m in PLACEHOLDER.finditer(o)}
    if spec.root.name == "noisy_prefs_v3":  # one SFT model per level of the sft factor, none named by an arm
        levels = {m.group(0) for vs in spec.cross.values() for o in [o for v in vs.values() for o in v] for m in PLACEHOLDER.finditer(o)}
        assert refs == set() and levels == {"{setup:sft0}", "{setup:sft1}", "{setup:sft2}"}
        assert set(spec.cross["flip"]) == {"0.0", "0.2", "0.4"} and all("data.pairs=on_policy" in v for v in spec.cross["flip"].values())
        assert all({"data.batch_size=16", "trainer.accumulate_grad_batches=4"} <= set(v) for v in spec.cross["flip"].values())  # 64 pairs
        assert "objective.epsilon=${noise.p}" in spec.arms["cdpo"] and spec.correction == "holm"
        return
    if spec.root.name == "online_mixing":
        assert refs == {"{run:natural}", "{run:doremi_proxy}", "{setup:base}"}  # every arm starts from the base model
        order = spec.arm_order()
        assert order.index("natural") < order.index("doremi_proxy") < order.index("doremi")
    elif spec.root.name == "noisy_prefs_v2":
        assert refs == {"{setup:sft}"}
        assert set(spec.cross) == {"flip"} and set(spec.cross["flip"]) == {"0.0", "0.2", "0.4"}
    elif spec.root.name == "selection_detection_v2":
        assert refs == {"{run:probe}"}
        assert spec.arm_order().index("probe") < min(spec.arm_order().index(a) for a in ("el2n", "forward_inf", "delta_loss", "nice", "cluster_less"))
    elif spec.root.name == "mates":
        assert refs == {"{run:probe}"}  # only the static EL2N arm reads the probe; MATES probes its own live model
        assert spec.arm_order().index("probe") < spec.arm_order().index("el2n")
    elif spec.root.name == "cluster_less":
        assert refs == {"{run:probe}"}  # LESS reads the probe's checkpoints, cluster-LESS its final weights
        assert spec.arm_order().index("probe") < min(spec.arm_order().index(a) for a in ("less", "cluster_less"))
    elif spec.root.name == "colm":
        assert refs == {"{setup:base}"}  # every arm, batch b, coreset b of 4b and batch 4b, starts from the base model
    else:
        assert refs == set()


def test_run_directories_are_ignored_by_git():
    ignore = (REPO / ".gitignore").read_text().splitlines()
    for pattern in ("experiments/*/runs/", "experiments/*/setup/", "experiments/*/logs/", "experiments/*/superseded/"):
        assert pattern in ignore, pattern
