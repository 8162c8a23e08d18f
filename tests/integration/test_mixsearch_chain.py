"""A tiny swarm → fit → propose → validate end to end, through the `assay-mix` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import HEAD


@pytest.mark.cli
@pytest.mark.integration
@pytest.mark.slow
def test_chain_end_to_end_and_relaunch_skips_completed(tmp_path, compose_cfg):
    root = tmp_path / "chain"
    cmd = [sys.executable, "-m", "assay.mixsearch.cli"]
    common = ["debug=fast", "data.domains=[copy,add,sort]", "eval.max_new_tokens=2"]
    proc = subprocess.run([*cmd, "chain", str(root), "-n", "6", "--proxy-steps", "3", "--target-steps", "4", "--regressor", "linear,log_linear", "--", *common],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout

    # swarm: six proxies, each a normal run directory named by its id, with a summary
    swarm = json.loads((root / "swarm" / "swarm.json").read_text())
    assert swarm["domains"] == ["add", "copy", "sort"]
    ids = [p["id"] for p in swarm["proxies"]]
    assert len(ids) == 6
    for pid in ids:
        summary = json.loads((root / "swarm" / "runs" / pid / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["choices"]["mixture"] == "weights"
        assert summary["provenance"]["code"]["commit"] == HEAD and summary["provenance"]["versions"]["torch"]
        realised = summary["data"]["source_counts"]
        # the proxy's mixture reached the run: zero-weight domains drew nothing, the heaviest drew most
        weights = next(p for p in swarm["proxies"] if p["id"] == pid)["weights"]
        assert all(realised.get(d, 0) == 0 for d, w in weights.items() if w == 0)
        assert max(realised, key=realised.get) == max(weights, key=weights.get)

    # fit: a held-out table and the predicted-vs-true plot
    fit = (root / "swarm" / "fit" / "fit.md").read_text()
    assert "| linear |" in fit and "| log_linear |" in fit and "held-out Spearman" in fit
    assert (root / "swarm" / "fit" / "pred_vs_true.png").stat().st_size > 1000

    # propose: a mixture config file and the overrides that use it
    proposal = json.loads((root / "swarm" / "proposed" / "linear.json").read_text())
    assert abs(sum(proposal["weights"].values()) - 1) < 1e-6
    assert (root / "swarm" / "proposed" / "conf" / "mixture" / "linear.yaml").is_file()
    assert (root / "swarm" / "proposed" / "linear.overrides").read_text().startswith("mixture=weights\nmixture.weights={")

    # validate: proposal vs natural vs best proxy at the target scale, in one table
    report = (root / "validate" / "report.md").read_text()
    for name in ("linear", "natural", "best_proxy"):
        assert f"| {name}" in report
    runs = sorted(p.name for p in (root / "validate" / "runs").iterdir() if p.is_dir())
    assert all(json.loads((root / "validate" / "runs" / r / "summary.json").read_text())["global_step"] == 4 for r in runs)
    assert "test/loss/*" in out

    # the proposal file is a mixture option the next run composes as it is
    from assay.config import validate

    conf = root / "swarm" / "proposed" / "conf"
    spec = validate(compose_cfg([f"hydra.searchpath=[file://{conf}]", "mixture=linear", *common]))
    props = spec.mixture.proportions({"add": 24, "copy": 24, "sort": 24})
    assert props == pytest.approx(proposal["weights"], abs=1e-6)

    # a re-launch of the swarm skips every completed proxy
    again = subprocess.run([*cmd, "swarm", str(root / "swarm")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "6 of 6 proxies already completed" in again.stdout and "nothing to launch" in again.stdout
