"""What a finished collaborative run leaves, written by the server once its final evaluation is
done: the global model (LoRA merged), ``metrics.csv`` (one row per round) and ``summary.json`` in
the format of any run, so ``assay-compare`` and sweeps read a simulation and a deployment alike."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from assay.data.noise import FLAGS

RUN_INFO = "run.json"  # in global/ (what every party reads): what the launching command knew (stage, group choices)
REPORTED = ("precision", "recall", "f1", "accuracy")


def write_run_info(run_dir: Path, stage: str, choices: dict[str, Any]) -> None:
    (run_dir / "global").mkdir(parents=True, exist_ok=True)
    (run_dir / "global" / RUN_INFO).write_text(json.dumps({"stage": stage, "choices": choices}, indent=2))


def write_outcome(srv, resumed_from: Optional[int], started: float) -> dict[str, Any]:
    """``srv`` is the run's ``ServerSide`` with ``state["done"]``."""
    import pandas as pd

    from assay.collab.apps import selects
    from assay.collab.data import plan_clients
    from assay.collab.local import load_trainable
    from assay.models.build import save_model
    from assay import provenance
    from assay.run.dirs import write_json

    run_dir, state, collab = srv.run_dir, srv.state, srv.collab
    info = json.loads((run_dir / "global" / RUN_INFO).read_text())
    examples = srv.examples
    train = examples.splits["train"]
    clients = plan_clients(train, collab)
    names = clients.names

    load_trainable(srv.model, dict(np.load(srv.dir / "global.npz")))
    save_model(srv.model, srv.tokenizer, run_dir)

    metrics = {k: float(v) for k, v in state["final"].items()}
    metrics.update(communication(state["history"]))
    per_client = client_reports(run_dir, names)
    metrics.update(flat_client_metrics(per_client))
    pd.DataFrame([{"step": h["round"], **{k: v for k, v in h.items() if k != "round"}} for h in state["history"]]).to_csv(run_dir / "metrics.csv", index=False)
    summary = {
        "status": "completed",
        "run_dir": str(run_dir),
        "stage": info["stage"],
        "metrics": metrics,
        "data": {"source_counts": examples.source_counts, "train_examples": len(train), "val_examples": len(examples.splits["val"]), "test_examples": len(examples.splits["test"]),
                 "kept_examples": int(sum(c["kept"] for c in state["clients"].values())) if state["clients"] else len(train)},
        "choices": info["choices"],
        "collab": {"clients": names, "partition_by": clients.column, "corruption": list(collab.corruption), "threshold": state["threshold"],
                   "selection": state["clients"], "per_client": per_client, "rounds": state["history"], "selects": selects(srv.spec, collab)},
        "resumed_from_round": resumed_from,
        "elapsed_s": round(time.time() - started, 1),
        "provenance": provenance.collect(run_dir, world_size=len(names)),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def communication(history: list[dict]) -> dict[str, float]:
    """Phase 2's traffic and client memory over the run: bytes sent down and up in all its rounds,
    and the largest per-round client memory count (``collab/client_memory_bytes``)."""
    rounds = [h for h in history if "collab/bytes_down" in h]
    if not rounds:
        return {}
    return {"collab/total_bytes_down": float(sum(h["collab/bytes_down"] for h in rounds)), "collab/total_bytes_up": float(sum(h["collab/bytes_up"] for h in rounds)),
            "collab/peak_client_memory_bytes": float(max(h["collab/client_memory_bytes"] for h in rounds))}


def client_reports(run_dir: Path, names: list[str]) -> dict[str, dict]:
    """Each client's selection report, read from its own directory (written by the client; the
    server never sees it: this is the experimenter's view of a simulation, or of a deployment whose
    clients share the run directory)."""
    out = {}
    for k, name in enumerate(names):
        path = run_dir / "clients" / f"{k}-{name}" / "selection.json"
        if path.is_file():
            out[str(k)] = json.loads(path.read_text())
    return out


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
