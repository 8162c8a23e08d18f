"""Three simulated clients on Flower, end to end: CLUES phase 1 with the global anchor threshold,
FedAvg of LoRA adapters, what the server received, resuming a killed run, the deployment apps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_assay, HEAD

pytest.importorskip("flwr")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ["logger=none", "collab=clues3", "selection=clues", "model.lora.r=4", "collab.local_steps=2", "data.train_per_domain=24", "data.val_per_domain=6",
        "data.test_per_domain=6", "data.batch_size=4", "data.eval_batch_size=32", "eval.max_new_tokens=3", "model.hidden_size=32", "model.intermediate_size=64",
        "model.num_layers=2", "model.num_heads=2", "model.num_kv_heads=2"]
ALLOWED_METRICS = {"num-examples", "train_loss", "lr", "client", "pool", "kept", "nan_scores"}


def assay_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_assay(args, cwd, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """One simulated 3-client CLUES + FedAvg run of two rounds, from one command."""
    tmp = tmp_path_factory.mktemp("simulated")
    run = tmp / "run"
    proc = assay_train([*TINY, "collab.rounds=2", f"hydra.run.dir={run}"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_three_clients_clues_then_fedavg_in_one_command(simulated):
    run = simulated
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["provenance"]["code"]["commit"] == HEAD and "flwr" in summary["provenance"]["versions"]
    m = summary["metrics"]
    for key in ("test/exact_match", "test/loss", "test/exact_match/copy", "val/exact_match", "selection/is_corrupted/f1", "selection/is_corrupted/auroc"):
        assert key in m and np.isfinite(m[key]), key
    # phase 1: every client wrote ids, scores and kept flags, keeping exactly the scores >= the global threshold
    threshold = summary["collab"]["threshold"]
    anchor = np.load(run / "server" / "anchor_scores.npy")
    assert threshold == pytest.approx(np.quantile(anchor, 0.1))  # selection.selector.quantile default
    for k, name in enumerate(["copy", "reverse", "sort"]):
        sel = pd.read_parquet(run / "clients" / f"{k}-{name}" / "selection.parquet")
        assert len(sel) == 24 and sel["id"].str.startswith(f"{name}/").all()
        assert (sel["kept"] == (sel["score"] >= threshold)).all()
        report = json.loads((run / "clients" / f"{k}-{name}" / "selection.json").read_text())
        assert report["kept"] == summary["collab"]["selection"][str(k)]["kept"] == m[f"collab/client{k}/kept"]
        assert {"precision", "recall", "f1", "accuracy"} <= set(report["is_corrupted"]) or k == 0  # client 0 is clean
    # per-round global metrics, the global model, a metrics.csv assay-compare reads
    assert [h["round"] for h in summary["collab"]["rounds"] if h["phase"] == "train"] == [1, 2]
    assert (run / "model" / "config.json").is_file() and (run / "tokenizer").is_dir()
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [1, 1, 2]  # warm-up round 1, training rounds 1 and 2

    # FedAvg: the saved global adapters are the example-weighted mean of what the clients sent in round 2
    received = [json.loads(line) for line in (run / "server" / "received.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in received} == {"warmup:1", "select", "train:1", "train:2"}

    # privacy: the server received parameters of the model's trainable shapes, counts and scalars only
    from assay.collab.server import ServerSide
    from assay.collab.local import trainable_state

    shapes = {k: list(v.shape) for k, v in trainable_state(ServerSide(run).model).items()}
    for r in received:
        assert r["error"] is None and r["configs"] == {}
        for record in r["arrays"].values():
            for key, shape in record.items():
                name = key.split("::")[-1]
                assert name in shapes and shape == shapes[name], key
        for record in r["metrics"].values():
            assert set(record) <= ALLOWED_METRICS, record
            assert all(isinstance(v, (int, float)) for v in record.values())
        if r["phase"] == "select":
            assert r["arrays"] == {}  # no scores, ids or examples: counts only
            assert set(r["metrics"]["metrics"]) == {"client", "pool", "kept", "nan_scores"}

    # assay-compare reads the run like any other
    from assay.compare import read_local_run

    read = read_local_run(run)
    assert read.status == "completed" and read.config["collab.name"] == "clues3" and "test/exact_match" in read.metrics


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"flower-superlink exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.mark.cli
def test_deployment_on_a_loopback_superlink_equals_the_simulation(simulated, tmp_path):
    """The README's deployment, on loopback: ``collab.prepare_only`` writes the run directory, a
    SuperLink and one SuperNode per client run as separate processes, ``flwr run`` ships the Flower
    App (experiments/collaborative/flower-app). The apps are the simulation's, unchanged: the global
    model and the summary equal the simulated run of the same config (FedAvg sums in arrival order,
    hence float rounding)."""
    from flwr.clientapp import ClientApp
    from flwr.common.object_ref import load_app
    from flwr.serverapp import ServerApp

    assert isinstance(load_app("assay.collab.deploy:server_app", ValueError), ServerApp)
    assert isinstance(load_app("assay.collab.deploy:client_app", ValueError), ClientApp)
    run = tmp_path / "run"
    proc = assay_train([*TINY, "collab.rounds=2", "collab.prepare_only=true", f"hydra.run.dir={run}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "config.yaml").is_file() and (run / "global" / "model" / "config.json").is_file() and not (run / "summary.json").is_file()

    repo = Path(__file__).resolve().parents[2]
    app = tmp_path / "flower-app"  # flwr writes its credentials next to the app: keep them out of the repository
    shutil.copytree(repo / "experiments" / "collaborative" / "flower-app", app)
    bin_dir = Path(sys.executable).parent  # the SuperLink and SuperNodes start flower-superexec / flwr-*app by name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_HOME": str(tmp_path / "flwr"), "PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]]),
           "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH", "")])}
    serverappio, fleet, control, simulationio, *clientappio = _free_ports(7)
    logs, procs = tmp_path / "logs", []
    logs.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "w")
        p = subprocess.Popen([str(bin_dir / args[0]), *args[1:]], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        link = start("superlink", "flower-superlink", "--insecure", "--serverappio-api-address", f"127.0.0.1:{serverappio}", "--fleet-api-address", f"127.0.0.1:{fleet}",
                     "--control-api-address", f"127.0.0.1:{control}", "--simulationio-api-address", f"127.0.0.1:{simulationio}")
        _wait_for_port(control, link, logs / "superlink.log")
        for k in range(3):
            start(f"supernode{k}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{fleet}", "--clientappio-api-address", f"127.0.0.1:{clientappio[k]}",
                  "--node-config", f"partition-id={k} num-partitions=3")
        flwr = subprocess.run([str(bin_dir / "flwr"), "run", str(app), "local", "--federation-config", f"address='127.0.0.1:{control}'",
                               "--run-config", f'run-dir="{run}"', "--stream"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    assert not (run / "server" / "error.json").is_file(), (run / "server" / "error.json").read_text()[-3000:]
    assert (run / "summary.json").is_file(), flwr.stdout[-3000:] + (logs / "superlink.log").read_text()[-2000:]

    deployed, simulation = json.loads((run / "summary.json").read_text()), json.loads((simulated / "summary.json").read_text())
    assert deployed["status"] == "completed" and deployed["choices"] == simulation["choices"]
    assert deployed["collab"]["threshold"] == pytest.approx(simulation["collab"]["threshold"], rel=1e-6)
    assert deployed["collab"]["selection"] == simulation["collab"]["selection"]
    for key, value in simulation["metrics"].items():
        assert deployed["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    a, b = np.load(run / "server" / "global.npz"), np.load(simulated / "server" / "global.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert (run / "model" / "config.json").is_file() and (run / "metrics.csv").is_file()


@pytest.mark.cli
def test_multirun_sweep_over_rules_and_compare(tmp_path):
    """A Hydra multirun runs one simulation per job in the same process; assay-compare groups them.
    The jobs sweep the collaborative rule: per-round (fedavg), none (local), merge once (ties)."""
    sweep = tmp_path / "sweep"
    proc = assay_train(["-m", *TINY, "selection=none", "collab.rounds=1", "collab.eval_every_round=false", "collab/aggregation=fedavg,local,ties", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from assay.compare import read_local_run

    runs = [read_local_run(sweep / str(i)) for i in range(3)]
    assert [r.status for r in runs] == ["completed"] * 3
    assert sorted(r.config["collab.aggregation.name"] for r in runs) == ["fedavg", "local", "ties"]
    ties = next(sweep / str(i) for i, r in enumerate(runs) if r.config["collab.aggregation.name"] == "ties")
    assert [h["phase"] for h in json.loads((ties / "summary.json").read_text())["collab"]["rounds"]] == ["merge"]
    compared = subprocess.run([sys.executable, "-m", "assay.compare", str(sweep), "--by", "collab.aggregation.name", "--metric", "test/loss"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert compared.returncode == 0 and all(r in compared.stdout for r in ("fedavg", "local", "ties")), compared.stderr[-2000:]
