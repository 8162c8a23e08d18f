"""The mixture axis end to end: a three-source run from local files of different schemas, online
mixers that run and resume bit-identically, DoReMi's three stages in one command and the resampling
variant against a reference run."""

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import run_in_hydra, without_speed
from tests.unit.data.test_multisource import write_sources

pytestmark = pytest.mark.integration
FAST = ["debug=fast", "trainer.enable_progress_bar=false", "logger=csv"]


def source_overrides(sources: dict) -> list[str]:
    def value(v):
        if isinstance(v, dict):
            return "{" + ",".join(f"{k}:{value(x)}" for k, x in v.items()) + "}"
        return str(v)

    return [f"+data.sources.{d}={value(e)}" for d, e in sources.items()]


def test_three_local_sources_of_different_schemas(tmp_path):
    sources = write_sources(tmp_path)
    summary = run_in_hydra([*FAST, "data=sources", *source_overrides(sources), "data.sources.inst.weight=2", "trainer.max_steps=3"], tmp_path / "run")
    counts = summary["data"]["source_counts"]
    assert set(counts) == {"qa", "inst", "pq"}
    # natural shares x the data weight of inst (2): inst gets twice its natural share of the pool
    pool = {"qa": 36, "inst": 27, "pq": 23}  # after carving 5% val + 5% test from each file
    assert counts["inst"] / counts["qa"] == pytest.approx(2 * pool["inst"] / pool["qa"], rel=0.1)
    realised = summary["mixture"]["realised"]
    assert realised["per_epoch"][0]["epoch"] == 0
    assert sum(d["examples"] for d in realised["total"].values()) == 3 * 8
    assert all(d["tokens"] > d["examples"] for d in realised["total"].values())
    assert json.loads((tmp_path / "run" / "mixture.json").read_text()) == realised
    metrics = summary["metrics"]
    for domain in ("qa", "inst", "pq"):  # every metric per domain, not only the listed ones
        for metric in ("loss", "exact_match", "token_acc", "confidence"):
            assert f"test/{metric}/{domain}" in metrics, sorted(metrics)


def _mixing_rows(run: Path) -> list[dict]:
    with open(run / "mixing.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def odm_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("odm")
    args = [*FAST, "mixture=odm", "mixture.update_every=1", "trainer.max_steps=12", "checkpoint_every_n_steps=1", "keep_checkpoints=true"]
    summary = run_in_hydra(args, root / "full")
    return root, args, summary


def test_online_mixer_resumes_bit_identically(odm_run):
    """Resuming from the checkpoint of step 6 (EXP3 holds uniform weights for its first k ln k = 8 updates) gives the same weights at every later update, the same
    data, and the same final metrics as the uninterrupted run."""
    root, args, full = odm_run
    resumed = run_in_hydra([*args, f"ckpt_path='{root / 'full' / 'checkpoints' / 'step=000006.ckpt'}'"], root / "resumed")
    a, b = _mixing_rows(root / "full"), _mixing_rows(root / "resumed")
    assert len(a) == 12 and a == b
    assert len({r["mixing/weight/copy"] for r in a}) > 1  # the weights did move
    assert without_speed(full["metrics"]) == without_speed(resumed["metrics"])
    assert full["mixture"]["realised"] == resumed["mixture"]["realised"]
    assert full["mixture"]["online"] == resumed["mixture"]["online"]


def test_doremi_resample_against_a_reference_run(odm_run, tmp_path):
    root, _, _ = odm_run
    summary = run_in_hydra([*FAST, "mixture=doremi_resample", f"mixture.reference={root / 'full'}", "mixture.update_every=2", "trainer.max_steps=6"], tmp_path / "doremi")
    online = summary["mixture"]["online"]
    assert online["updates"] == 3
    assert sum(online["average_weights"].values()) == pytest.approx(1.0)
    rows = _mixing_rows(tmp_path / "doremi")
    assert {"mixing/excess_loss/add", "mixing/average_weight/add", "mixing/weight/add"} <= set(rows[0])
    assert list((Path(__import__("os").environ["ASSAY_CACHE"]) / "reference_losses").glob("*.parquet"))


def test_skill_it_learns_its_graph_by_training_and_caches_it(tmp_path):
    """The default estimate (the authors'): a short run per skill from the starting model, A_ij = the
    relative decrease of skill j's validation loss, in mixing.json with the losses it came from and
    cached per starting model under $ASSAY_CACHE/skill_graphs/."""
    summary = run_in_hydra([*FAST, "mixture=skill_it", "mixture.update_every=2", "trainer.max_steps=4"], tmp_path / "skill_it")
    written = json.loads((tmp_path / "skill_it" / "mixing.json").read_text())
    assert written == summary["mixture"]["online"]
    graph, estimate = written["graph"], written["graph_estimate"]
    assert len(graph) == 5 and all(len(row) == 5 and min(row.values()) >= 0 for row in graph.values())
    assert all(0 < graph[d][d] < 1 for d in graph)  # measured, not set to 1
    assert estimate["estimate"] == "training" and estimate["graph_steps"] == 20
    before, after = estimate["loss_before"], estimate["loss_after"]
    for i in graph:
        for j in graph:
            assert graph[i][j] == pytest.approx(max(0.0, (before[j] - after[i][j]) / before[j]))
    cached = Path(__import__("os").environ["ASSAY_CACHE"]) / "skill_graphs" / f"{estimate['key']}.json"
    assert json.loads(cached.read_text())["graph"] == [[graph[i][j] for j in sorted(graph)] for i in sorted(graph)]


def test_skill_it_with_the_gradient_probe_and_a_schedule(tmp_path):
    summary = run_in_hydra([*FAST, "mixture=skill_it", "mixture.graph_estimate=gradient_probe", "mixture.update_every=2", "trainer.max_steps=4"], tmp_path / "skill_it")
    graph = summary["mixture"]["online"]["graph"]
    assert all(graph[d][d] == 1.0 for d in graph) and len(graph) == 5
    assert summary["mixture"]["online"]["graph_estimate"] == {"estimate": "gradient_probe"}
    sched = run_in_hydra([*FAST, "mixture=schedule", "mixture.upsample=[add]", "mixture.factor=50", "mixture.last_fraction=0.5", "trainer.max_steps=4"], tmp_path / "schedule")
    realised = sched["mixture"]["realised"]["total"]
    assert realised["add"]["examples"] > max(v["examples"] for d, v in realised.items() if d != "add")


def test_doremi_three_stages_in_one_command(tmp_path):
    """reference (natural weights) -> proxy (group DRO: batches drawn by α_ref, α updated every step,
    loss reweighted) -> main (a fresh model on the proxy's average α), on the skills corpus."""
    summary = run_in_hydra([*FAST, "experiment=doremi", "trainer.max_steps=6"], tmp_path / "doremi")
    assert list(summary["stages"]) == ["reference", "proxy", "main"]
    proxy = json.loads((tmp_path / "doremi" / "proxy" / "mixing.json").read_text())
    assert proxy["updates"] == 6  # every optimizer step
    average = proxy["average_weights"]
    assert sum(average.values()) == pytest.approx(1.0) and len(average) == 5
    rows = _mixing_rows(tmp_path / "doremi" / "proxy")
    assert len(rows) == 6
    first = {d: float(rows[0][f"mixing/weight/{d}"]) for d in average}
    assert first != {d: float(rows[-1][f"mixing/weight/{d}"]) for d in average}  # α moved
    mean = {d: sum(float(r[f"mixing/weight/{d}"]) for r in rows) / len(rows) for d in average}
    assert mean == pytest.approx(average)  # the output is the average of α over the updates
    # the proxy draws its batches from α_ref (natural shares): α never changes what is sampled
    proxy_summary = summary["stages"]["proxy"]["mixture"]
    initial = proxy_summary["initial_weights"]
    natural = summary["stages"]["reference"]["data"]["source_counts"]
    total = sum(natural.values())
    assert initial == pytest.approx({d: n / total for d, n in natural.items()})
    # the main run is a fresh model trained on the average weights (the pool resampled once by them)
    main_cfg = (tmp_path / "doremi" / "main" / "config.yaml").read_text()
    assert "weights_from:" in main_cfg and "init_from: null" in main_cfg
    counts = summary["stages"]["main"]["data"]["source_counts"]
    n = sum(counts.values())
    assert {d: counts.get(d, 0) / n for d in average} == pytest.approx(average, abs=0.08)
