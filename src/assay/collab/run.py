"""``assay-train collab=<preset>``: check the clients, write the run directory, run the Flower
simulation, gather the parties' artefacts into one ``summary.json`` (the format of any run, so
``assay-compare`` and sweeps read it).

    assay-train collab=clues3                                       # 3 clients, CLUES + FedAvg
    assay-train collab=skills4 selection=el2n selection/selector=anchor_quantile
    assay-train -m collab=skills4 collab.mode=fedavg,merge seed=0,1,2
    assay-train collab=skills4 hydra.run.dir=<dir> ckpt_path=last   # resume at the last finished round
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from assay.errors import UserError, check
from assay.data.noise import FLAGS


def run_collab(cfg: DictConfig) -> dict[str, Any]:
    import pandas as pd
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.collab.apps import CLIENTS_DIR, SERVER_DIR, selects, uses_anchor
    from assay.collab.data import check_anchor, plan_clients
    from assay.config import validate
    from assay.data import build_examples
    from assay.models.build import save_model
    from assay.preemption import requeued
    from assay.registry import to_object
    from assay.rundir import job_choices, job_config, write_json

    started = time.time()
    spec = validate(cfg)
    collab = to_object(cfg.collab)
    run_dir = Path(cfg.paths.output_dir)
    check(spec.noise.name == "none", "noise", spec.noise.name, "a collaborative run corrupts each client's data itself: keep noise=none and set collab.corruption=[rate per client]")
    if collab.mode == "merge":
        check(spec.model.lora.r > 0, "collab.mode", "merge", "merges LoRA adapters, and this run has none: set model.lora.r > 0 (e.g. model.lora.r=8)")
    check(not collab.oracle or collab.corruption, "collab.oracle", True, "keeps the clean examples by their ground-truth flags; set collab.corruption so there are flags")

    examples = build_examples(spec.data, spec.mixture, spec.noise)
    train = examples.splits["train"]
    clients = plan_clients(train, collab)
    if uses_anchor(spec, collab):
        split = spec.selection.selector.split
        check(split in examples.splits, "selection.selector.split", split, f"must name a split of the data; have {sorted(examples.splits)}")
        check_anchor(examples.splits[split], train, split)
    for split in ("val", "test"):
        check(split in examples.splits, "data", spec.data.name, f"needs a public {split} split (the shared validation / held-out set)")

    resume = cfg.get("ckpt_path") == "last" or requeued()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    if not resume:
        for d in (SERVER_DIR, CLIENTS_DIR, "global"):
            shutil.rmtree(run_dir / d, ignore_errors=True)
    OmegaConf.save(OmegaConf.create(job_config(cfg)), run_dir / "config.yaml")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec.trainer.apply_threads()

    if not (run_dir / "global" / "model" / "config.json").is_file():
        # The base every party starts from. A model whose tokenizer is trained on the corpus trains
        # it on the public val split only: no client's text shapes the shared vocabulary.
        public = DatasetDict({"train": examples.splits["val"], "val": examples.splits["val"]})
        base = replace(spec.model, lora=replace(spec.model.lora, r=0))
        model, tokenizer = base.build(public)
        save_model(model, tokenizer, run_dir / "global")
    if collab.prepare_only:
        print(f"[assay] prepared {run_dir}: flwr run <app> --run-config 'run-dir=\"{run_dir.resolve()}\"' (see README, Collaborative training)", flush=True)
        return {"status": "prepared", "run_dir": str(run_dir), "metrics": {}}

    (run_dir / SERVER_DIR / "error.json").unlink(missing_ok=True)
    resumed_from = _rounds_done(run_dir) if resume else None
    simulate(run_dir, len(clients.names), collab.cpus)
    error = run_dir / SERVER_DIR / "error.json"
    if error.is_file():
        e = json.loads(error.read_text())
        if "field" in e:
            raise UserError(e["field"], e["value"], e["allowed"])
        raise RuntimeError(f"the collaborative run failed on the server:\n{e['traceback']}")
    state = json.loads((run_dir / SERVER_DIR / "state.json").read_text())
    if not state.get("done"):
        raise RuntimeError(f"the simulation ended before the last round ({state.get('rounds_done')} of {collab.rounds} done); rerun with ckpt_path=last to resume")

    # the global model, like any run's
    from assay.collab.server import ServerSide
    from assay.collab.local import load_trainable

    srv = ServerSide(run_dir)
    load_trainable(srv.model, dict(np.load(run_dir / SERVER_DIR / "global.npz")))
    save_model(srv.model, srv.tokenizer, run_dir)

    metrics = {k: float(v) for k, v in state["final"].items()}
    per_client = client_reports(run_dir, clients.names)
    metrics.update(flat_client_metrics(per_client))
    pd.DataFrame([{"step": h["round"], **{k: v for k, v in h.items() if k != "round"}} for h in state["history"]]).to_csv(run_dir / "metrics.csv", index=False)
    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "stage": cfg.stage,
        "metrics": metrics,
        "data": {"source_counts": examples.source_counts, "train_examples": len(train), "val_examples": len(examples.splits["val"]), "test_examples": len(examples.splits["test"]),
                 "kept_examples": int(sum(c["kept"] for c in state["clients"].values())) if state["clients"] else len(train)},
        "choices": {**job_choices(cfg), "collab": collab.name, "mode": collab.mode},
        "collab": {"clients": clients.names, "partition_by": clients.column, "corruption": list(collab.corruption), "threshold": state["threshold"],
                   "selection": state["clients"], "per_client": per_client, "rounds": state["history"], "selects": selects(spec, collab)},
        "resumed_from_round": resumed_from,
        "elapsed_s": round(time.time() - started, 1),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _rounds_done(run_dir: Path):
    path = run_dir / "server" / "state.json"
    return json.loads(path.read_text())["rounds_done"] if path.is_file() else None


def simulate(run_dir: Path, num_clients: int, cpus: int) -> None:
    """N virtual SuperNodes on this machine through Flower's Simulation Engine (Ray backend)."""
    try:
        from flwr.simulation import run_simulation
    except ImportError:
        raise UserError("collab", "flwr", "Flower is not installed: `pip install -e '.[collab]'` and `pip install --no-deps flwr==1.25.0` (see the README)") from None
    from assay.collab.apps import make_client_app
    from assay.collab.server import make_server_app

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's workers inherit this environment: the clients import this assay, one thread per CPU.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")] if p)
    os.environ.setdefault("OMP_NUM_THREADS", str(cpus))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    backend = {"client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": 40}}
    run_simulation(make_server_app(run_dir), make_client_app(run_dir), num_supernodes=num_clients, backend_config=backend)


def client_reports(run_dir: Path, names: list[str]) -> dict[str, dict]:
    """Each client's selection report, read from its own directory (written by the client; the
    server never sees it: this is the experimenter's view of a simulation)."""
    out = {}
    for k, name in enumerate(names):
        path = run_dir / "clients" / f"{k}-{name}" / "selection.json"
        if path.is_file():
            out[str(k)] = json.loads(path.read_text())
    return out


REPORTED = ("precision", "recall", "f1", "accuracy")


def flat_client_metrics(per_client: dict[str, dict]) -> dict[str, float]:
    """``collab/client<k>/<flag>/<metric>`` per client plus ``selection/<flag>/<metric>`` means over
    clients (AUROC and precision@k where a client has both clean and noisy examples)."""
    out: dict[str, list] = {}
    flat = {}
    for k, report in per_client.items():
        flat[f"collab/client{k}/kept"] = float(report["kept"])
        flat[f"collab/client{k}/kept_share"] = report["kept"] / max(report["pool"], 1)
        for flag in FLAGS:
            if flag not in report:
                continue
            for m in REPORTED:
                flat[f"collab/client{k}/{flag}/{m}"] = float(report[flag][m])
                out.setdefault(f"selection/{flag}/{m}", []).append(float(report[flag][m]))
            for m in ("auroc", "precision_at_k"):
                if flag in report.get("detection", {}):
                    flat[f"collab/client{k}/{flag}/{m}"] = float(report["detection"][flag][m])
                    out.setdefault(f"selection/{flag}/{m}", []).append(float(report["detection"][flag][m]))
    flat.update({k: float(np.mean(v)) for k, v in out.items()})
    return flat
