"""The Flower ``ServerApp``: the coordinator of a collaborative run (``assay.collab.apps`` holds
what both parties share and the ``ClientApp``).

Rounds: optional warm-up rounds of federated training (scoring checkpoints with averaged Adam
moments), CLUES phase 1 (every client scores its own examples; the server only sets the global
threshold from the public anchor set), then phase 2 as the run's collaborative rule says
(``assay.collab.rules``: federated averaging, merging the clients' adapters once, or each client
alone). The server sees parameters, counts and aggregate metrics, never
an example, an id or a per-sample score.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Optional

import numpy as np

from assay.collab.apps import SERVER_DIR, Party, from_record, selects, to_record, uses_anchor
from assay.collab.local import MOMENT_PREFIX, anchor_threshold, client_memory_bytes, load_trainable, split_moments, trainable_names, trainable_state, write_checkpoint
from assay.errors import UserError


class ServerSide(Party):
    def __init__(self, run_dir: Path):
        from assay.collab.data import plan_clients

        super().__init__(run_dir)
        self.dir = self.run_dir / SERVER_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.num_clients = len(plan_clients(self.examples.splits["train"], self.collab).names)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {
            "warmup_done": 0, "lrs": [], "selected": False, "threshold": None, "rounds_done": 0, "history": [], "done": False, "clients": {},
        }

    # ---- state that makes the run resumable by round ------------------------------------------
    def save(self, arrays: Optional[dict] = None, name: str = "global") -> None:
        if arrays is not None:
            np.savez(self.dir / f"{name}.tmp.npz", **arrays)
            (self.dir / f"{name}.tmp.npz").rename(self.dir / f"{name}.npz")
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, default=float))
        tmp.rename(self.state_path)

    def arrays(self, name: str = "global") -> Optional[dict]:
        path = self.dir / f"{name}.npz"
        return dict(np.load(path)) if path.is_file() else None

    def record(self, phase: str, replies) -> None:
        """Everything that arrived from clients, as keys, shapes and values (the privacy audit)."""
        with open(self.dir / "received.jsonl", "a") as f:
            for msg in replies:
                entry = {"phase": phase, "node": int(msg.metadata.src_node_id), "error": msg.error.reason if msg.has_error() else None}
                if not msg.has_error():
                    c = msg.content
                    entry.update({"arrays": {k: {n: list(a.shape) for n, a in rec.items()} for k, rec in c.array_records.items()},
                                  "metrics": {k: dict(rec) for k, rec in c.metric_records.items()},
                                  "configs": {k: dict(rec) for k, rec in c.config_records.items()}})
                f.write(json.dumps(entry, default=str) + "\n")

    def failed(self, phase: str, replies) -> None:
        bad = [r for r in replies if r.has_error()]
        if bad:
            raise RuntimeError(f"{phase}: {len(bad)} client(s) failed: {bad[0].error.reason}")


def _wait_for_nodes(grid, n: int, timeout: float = 600.0) -> list[int]:
    start = time.time()
    while len(ids := list(grid.get_node_ids())) < n:
        if time.time() - start > timeout:
            raise RuntimeError(f"only {len(ids)} of {n} clients connected after {timeout:.0f} s")
        time.sleep(0.2)
    return sorted(ids)


def _train_round(srv: ServerSide, grid, strategy, arrays: dict, phase: str, rnd: int, steps: int, nodes: Optional[list[int]] = None,
                 extra: Optional[dict[str, dict]] = None):
    """One round: send the global state (and the rule's ``extra`` records) to the sampled clients,
    FedAvg their replies (Flower's ``FedAvg.aggregate_train``: arrays and metrics weighted by
    ``num-examples``). Returns the replies and the bytes of arrays sent each way."""
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    config = ConfigRecord({"phase": phase, "steps": int(steps), "server-round": int(rnd)})
    if nodes is None:
        random.seed(srv.seed * 7_001 + rnd + (10_000 if phase == "warmup" else 0))  # Flower samples with `random`
        messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
    else:
        content = RecordDict({"arrays": to_record(arrays), "config": config})
        messages = [Message(content=content, message_type=MessageType.TRAIN, dst_node_id=n) for n in nodes]
    for name, record in (extra or {}).items():
        record = to_record(record)
        for msg in messages:
            msg.content[name] = record
    replies = list(grid.send_and_receive(messages))
    srv.record(f"{phase}:{rnd}", replies)
    srv.failed(f"{phase} round {rnd}", replies)
    sent = {"collab/bytes_down": sum(array_bytes(m.content) for m in messages), "collab/bytes_up": sum(array_bytes(r.content) for r in replies)}
    return replies, sent


def array_bytes(content) -> int:
    """Bytes of every array a message carries, as Flower serializes them (numpy's .npy: data + header)."""
    return int(sum(len(a.data) for rec in content.array_records.values() for a in rec.values()))


def _aggregate(strategy, rnd: int, replies) -> tuple[dict, dict]:
    agg, metrics = strategy.aggregate_train(rnd, replies)
    return from_record(agg), dict(metrics or {})


def server_main(grid, run_dir: Path) -> None:
    """Phase 1 (warm-up, global threshold, selection on every client), phase 2 (collaborative
    training on what was kept), final evaluation; then the run's outcome (global model,
    ``summary.json``). State is saved after every round."""
    from assay.collab.outcome import write_outcome

    started = time.time()
    srv = ServerSide(run_dir)
    resumed_from = srv.state["rounds_done"] if srv.state_path.is_file() else None
    try:
        _serve(srv, grid)
        write_outcome(srv, resumed_from, started)
    except UserError as e:
        (srv.dir / "error.json").write_text(json.dumps({"field": e.field, "value": e.value, "allowed": e.allowed}, default=str))
    except BaseException:
        (srv.dir / "error.json").write_text(json.dumps({"traceback": traceback.format_exc()}))
        raise


def _serve(srv: ServerSide, grid) -> None:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
    from flwr.serverapp.strategy import FedAvg

    c, st = srv.collab, srv.state
    nodes = _wait_for_nodes(grid, srv.num_clients)
    strategy = FedAvg(fraction_train=c.fraction_train, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=srv.num_clients)
    initial = srv.arrays("initial")
    if initial is None:
        initial = trainable_state(srv.model)
        srv.save(initial, "initial")

    # ---- phase 1: federated warm-up -> shared checkpoints -> global threshold -> local selection ----
    if selects(srv.spec, c) and not st["selected"]:
        scoring = srv.dir / "scoring"
        arrays = srv.arrays("warmup") or initial
        for rnd in range(st["warmup_done"] + 1, c.warmup_rounds + 1):
            replies, _ = _train_round(srv, grid, strategy, arrays, "warmup", rnd, c.local_steps)
            merged, metrics = _aggregate(strategy, rnd, replies)
            weights, m, v = split_moments(merged)
            write_checkpoint(scoring, rnd, srv.model, weights, m, v, metrics["lr"])
            arrays = weights
            st["warmup_done"], st["lrs"] = rnd, st["lrs"] + [float(metrics["lr"])]
            st["history"].append({"phase": "warmup", "round": rnd, "train/loss": metrics.get("train_loss")})
            srv.save(arrays, "warmup")
        config = ConfigRecord({"checkpoints": c.warmup_rounds, **{f"lr{i}": float(lr) for i, lr in enumerate(st["lrs"])}})
        content = RecordDict({"config": config, "arrays": to_record(initial)})
        import torch

        for i in range(c.warmup_rounds):  # each checkpoint's weights and moments, as the clients will write them
            saved = torch.load(scoring / "checkpoints" / f"step={i + 1:06d}.ckpt", weights_only=False)
            names = trainable_names(srv.model)
            rec = {n: saved["state_dict"][f"model.{n}"].numpy() for n in names}
            for j, n in enumerate(names):
                rec[MOMENT_PREFIX[0] + n] = saved["optimizer_states"][0]["state"][j]["exp_avg"].numpy()
                rec[MOMENT_PREFIX[1] + n] = saved["optimizer_states"][0]["state"][j]["exp_avg_sq"].numpy()
            content[f"ckpt{i}"] = to_record(rec)
        if uses_anchor(srv.spec, c):
            st["threshold"] = _anchor_threshold(srv, scoring if c.warmup_rounds else None, initial)
            content["config"]["threshold"] = st["threshold"]
        messages = [Message(content=content, message_type=f"{MessageType.QUERY}.select", dst_node_id=n) for n in nodes]
        replies = list(grid.send_and_receive(messages))
        srv.record("select", replies)
        srv.failed("selection", replies)
        from assay.collab.data import plan_clients

        names = plan_clients(srv.examples.splits["train"], c).names
        for r in sorted(replies, key=lambda r: int(r.content["metrics"]["client"])):
            k, kept, pool = (int(r.content["metrics"][x]) for x in ("client", "kept", "pool"))
            st["clients"][str(k)] = {"name": names[k], "pool": pool, "kept": kept, "nan_scores": int(r.content["metrics"].get("nan_scores", 0))}
            if kept == 0:
                nan = f", {st['anchor_nan']} of {st['anchor_size']} anchor scores NaN (ranked lowest)" if st.get("anchor_nan") else ""
                why = f"threshold {st['threshold']:.4g} from the anchor set{nan}" if st["threshold"] is not None else f"selection/selector={srv.spec.selection.selector.name}"
                raise UserError(f"collab.clients[{k}]", names[k], f"client {k} kept no examples after selection ({why}); lower selection.selector.quantile or keep a larger share")
        st["selected"] = True
        srv.save()

    # ---- phase 2: collaborative training on what was kept, by the run's rule ---------------------
    rule = srv.rule
    arrays = srv.arrays("global") or initial
    if rule.trains_once:
        if st["rounds_done"] < c.rounds:
            replies, sent = _train_round(srv, grid, strategy, initial, "train", 1, c.rounds * c.local_steps, nodes=nodes)
            states = [from_record(r.content["arrays"]) for r in sorted(replies, key=lambda r: int(r.metadata.src_node_id))]
            arrays = rule.combine(srv.model, initial, states)
            st["rounds_done"] = c.rounds
            st["history"].append({"phase": "merge", "round": c.rounds, "train/loss": float(np.mean([r.content["metrics"]["train_loss"] for r in replies])),
                                  **sent, "collab/client_memory_bytes": client_memory_bytes(rule.client_model(srv)),
                                  **({f"val/{k[4:]}": v for k, v in srv_eval(srv, arrays, "val").items()} if c.eval_every_round else {})})
            srv.save(arrays)
    else:
        for rnd in range(st["rounds_done"] + 1, c.rounds + 1):
            extra, info = rule.server_round(srv, arrays, rnd)
            replies, sent = _train_round(srv, grid, strategy, arrays, "train", rnd, c.local_steps, extra=extra)
            merged, metrics = _aggregate(strategy, rnd, replies)
            arrays = rule.aggregate(arrays, merged)
            entry = {"phase": "train", "round": rnd, "train/loss": metrics.get("train_loss"), "clients": len(replies), **info, **sent,
                     "collab/client_memory_bytes": client_memory_bytes(rule.client_model(srv))}
            if c.eval_every_round and rule.rounds_of_aggregation:
                entry.update(srv_eval(srv, arrays, "val"))
            st["history"].append(entry)
            st["rounds_done"] = rnd
            srv.save(arrays)
            _crash_if_asked(rnd)

    # ---- final evaluation on the public held-out splits -----------------------------------------
    if not st["done"]:
        if rule.clients_keep_models:
            content = RecordDict({"config": ConfigRecord({"split": "test"}), "arrays": to_record(initial)})
            replies = list(grid.send_and_receive([Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=n) for n in nodes]))
            srv.record("evaluate", replies)
            srv.failed("evaluation", replies)
            per_client = [dict(r.content["metrics"]) for r in replies]
            keys = sorted(set.intersection(*(set(m) for m in per_client)) - {"num-examples"})
            st["final"] = {k: float(np.mean([m[k] for m in per_client])) for k in keys}
        else:
            st["final"] = {**srv_eval(srv, arrays, "val"), **srv_eval(srv, arrays, "test")}
        st["done"] = True
        srv.save(arrays)


def _crash_if_asked(rnd: int) -> None:
    """Fault injection for resume tests: ``ASSAY_FAULT_KILL_AFTER_ROUND=k`` ends this process with
    SIGKILL right after round k's state is saved, a crash at an exact point (a kill from outside
    lands wherever the scheduler happens to be)."""
    if os.environ.get("ASSAY_FAULT_KILL_AFTER_ROUND") == str(rnd):
        os.kill(os.getpid(), signal.SIGKILL)


def srv_eval(srv: ServerSide, arrays: dict, split: str) -> dict[str, float]:
    load_trainable(srv.model, arrays)
    return srv.evaluate(split)


def _anchor_threshold(srv: ServerSide, scoring: Optional[Path], initial: dict) -> float:
    """The server scores the public anchor set exactly as the clients score their data (same
    scorer, same checkpoints) and takes the configured quantile."""
    sel = srv.spec.selection
    anchor = srv.public[sel.selector.anchor_split()]
    if scoring is None:
        load_trainable(srv.model, initial)
    else:
        load_trainable(srv.model, srv.arrays("warmup"))
    scores = np.asarray(srv.scorer(scoring).score(srv.scorer_context(anchor, srv.model)), dtype=np.float64)
    np.save(srv.dir / "anchor_scores.npy", scores)
    # unscorable anchors rank lowest: a -inf threshold (the quantile fell among them) keeps everything
    srv.state["anchor_nan"], srv.state["anchor_size"] = int(np.isnan(scores).sum()), int(len(scores))
    return anchor_threshold(scores, sel.selector.threshold_quantile())


def make_server_app(run_dir: Optional[Path] = None):
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        server_main(grid, Path(run_dir or context.run_config["run-dir"]))

    return app
