"""The Flower apps: one ``ClientApp`` (a data silo, here) and one ``ServerApp`` (the coordinator,
``assay.collab.server``), and what both parties read from a run directory.

The same two apps run as a simulation (``flwr.simulation.run_simulation``, what ``assay-train
collab=...`` does) and as a deployment (SuperLink + SuperNodes, ``flwr run``, entry points in
``assay.collab.deploy``; see the README). Both
read the run directory written by the launcher: its resolved ``config.yaml`` and the base model and
tokenizer under ``global/``. In a deployment the run directory is the app's run config
``run-dir`` (a shared or copied path) and a client's index is its node config ``partition-id``.

What travels (asserted in tests/collab): server -> client: the trainable parameters, the scoring
checkpoints (parameters + averaged Adam moments), the learning rates, the global threshold, and under
a rule that ships an emulator (``fedbiot``) the emulator's compressed layers each round.
Client -> server: trainable parameters (+ Adam moments in warm-up rounds), example counts, mean
training loss and learning rate, and for a client's own model under a rule whose clients keep their
models (``collab/aggregation=local``), held-out metrics on the public test split. Never an example,
an id or a per-sample score.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from assay.collab.local import evaluate, load_trainable, local_train, split_moments, trainable_state, write_checkpoint
from assay.collab.rules import rule_of

SERVER_DIR = "server"
CLIENTS_DIR = "clients"


# --------------------------------------------------------------------------------------------------
# The parties' view of a run directory


def load_spec(run_dir: Path):
    """The typed, validated run spec and collab config from a run directory's ``config.yaml``."""
    from omegaconf import OmegaConf

    from assay.config import CollabConfig
    from assay.config import EvalConfig, OptimConfig, RunSpec
    from assay.registry import GROUPS, from_saved

    raw = OmegaConf.load(Path(run_dir) / "config.yaml")

    def typed(cls, node):
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))

    parts = {g: from_saved(g, raw[g]) for g in GROUPS}
    spec = RunSpec(**parts, optim=typed(OptimConfig, raw.optim), eval=typed(EvalConfig, raw.eval), raw=raw)
    return spec, typed(CollabConfig, raw.collab), int(raw.seed)


class Party:
    """What server and client both hold: the spec, the public splits (tokenized), the model."""

    def __init__(self, run_dir: Path):
        from datasets import DatasetDict
        from transformers import AutoTokenizer

        from assay.data import build_examples
        from assay.data.collate import tokenize_split

        self.run_dir = Path(run_dir)
        self.spec, self.collab, self.seed = load_spec(self.run_dir)
        self.rule = rule_of(self.collab.aggregation)
        self.tokenizer = AutoTokenizer.from_pretrained(self.run_dir / "global" / "tokenizer")
        self.examples = build_examples(self.spec.data, self.spec.mixture, self.spec.noise)
        d = self.spec.data
        self.tokenize = lambda ds: tokenize_split(ds, self.tokenizer, d.format, d.separator, d.max_length).add_column("_row", list(range(len(ds))))
        self.public = DatasetDict({s: self.tokenize(ds) for s, ds in self.examples.splits.items() if s != "train"})
        self.model = replace(self.spec.model, init_from=str(self.run_dir / "global")).build(None)[0]
        self.rule.prepare_model(self.model)

    def scorer_context(self, train, model):
        from assay.selection import SelectionContext

        return SelectionContext(train, with_train(self.public, train), model, self.tokenizer, None, None)

    def scorer(self, checkpoints: Optional[Path]):
        """The run's scorer; the ones that sum over checkpoints (CLUES, LESS) read the federated ones."""
        sel = self.spec.selection
        reads_checkpoints = sel.needs_model and not sel.scores_with_final_model and hasattr(sel, "dynamics_from")
        if reads_checkpoints:
            return replace(sel, dynamics_from=str(checkpoints) if checkpoints is not None else None)
        return replace(sel, dynamics_from=None) if hasattr(sel, "dynamics_from") else sel

    def evaluate(self, split: str) -> dict[str, float]:
        s = self.spec
        return evaluate(self.model, self.tokenizer, s.objective, s.optim, s.eval, s.data, self.public[split], split)


def with_train(public, train):
    from datasets import DatasetDict

    return DatasetDict({**public, "train": train})


def selects(spec, collab) -> bool:
    """Whether phase 1 (scoring and filtering) runs at all."""
    return collab.oracle or spec.selection.selector.name != "all"


def uses_anchor(spec, collab) -> bool:
    """Whether the server sets one threshold on the public anchor set for every client: the selector
    says so (``anchors_threshold``, e.g. ``anchor_quantile``), and the oracle keeps by flags instead."""
    return not collab.oracle and bool(getattr(spec.selection.selector, "anchors_threshold", False))


# --------------------------------------------------------------------------------------------------
# Client


_CLIENTS: dict[tuple[str, int], "ClientSide"] = {}


class ClientSide(Party):
    def __init__(self, run_dir: Path, index: int, client_dir: Optional[Path] = None):
        from assay.collab.data import client_partition, plan_clients

        super().__init__(run_dir)
        self.index = index
        self.clients = plan_clients(self.examples.splits["train"], self.collab)
        self.name = self.clients.names[index]
        self.dir = Path(client_dir) if client_dir else self.run_dir / CLIENTS_DIR / f"{index}-{self.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        raw = client_partition(self.examples.splits["train"], self.clients, index, self.collab, self.spec.data.format, self.seed)
        self.train = self.tokenize(raw)

    @classmethod
    def get(cls, run_dir: Path, context) -> "ClientSide":
        index = int(context.node_config["partition-id"])
        key = (str(run_dir), index)
        if key not in _CLIENTS:
            _CLIENTS[key] = cls(run_dir, index, context.node_config.get("client-dir"))
        return _CLIENTS[key]

    def kept_rows(self) -> np.ndarray:
        import pandas as pd

        path = self.dir / "selection.parquet"
        if not path.is_file():
            return np.arange(len(self.train))
        return np.flatnonzero(pd.read_parquet(path)["kept"].to_numpy())

    def handle_train(self, content) -> dict:
        config = content["config"]
        phase, steps, rnd = str(config["phase"]), int(config["steps"]), int(config["server-round"])
        s = self.spec
        seed = self.seed * 100_003 + (1000 if phase == "warmup" else 0) + rnd * 97 + self.index
        rows = np.arange(len(self.train)) if phase == "warmup" else self.kept_rows()

        def train(model, penalty=None):
            return local_train(model, self.tokenizer, self.train, rows, s.objective, s.optim, s.data, steps, seed, s.trainer.gradient_clip_val,
                               self.collab.local_schedule, penalty)

        if self.rule.ships_emulator and phase == "train":
            arrays, out = self.rule.client_train(self, content, train)
            return {"arrays": arrays, "metrics": {"num-examples": int(len(rows)), "train_loss": out["loss"], "lr": out["lr"]}}
        local_state = self.dir / "local_model.npz"
        if self.rule.clients_keep_models and phase == "train" and local_state.is_file():
            load_trainable(self.model, dict(np.load(local_state)))
        else:
            load_trainable(self.model, from_record(content["arrays"]))
        out = train(self.model)
        arrays = trainable_state(self.model)
        if phase == "warmup":
            arrays.update(out["moments"])
        if self.rule.clients_keep_models and phase == "train":
            np.savez(local_state, **arrays)
        return {"arrays": arrays, "metrics": {"num-examples": int(len(rows)), "train_loss": out["loss"], "lr": out["lr"]}}

    def handle_select(self, content) -> dict:
        """Score this client's examples with the shared checkpoints, keep by the global threshold
        (or this client's own budget), write the artefact locally; only counts go back."""
        from assay.collab.data import oracle_scores, quality_report
        from assay.selection import Selection

        config = content["config"]
        n_ckpt = int(config["checkpoints"])
        scoring = self.dir / "scoring"
        for i in range(n_ckpt):
            w, m, v = split_moments(from_record(content[f"ckpt{i}"]))
            write_checkpoint(scoring, i + 1, self.model, w, m, v, float(config[f"lr{i}"]))
            if i == n_ckpt - 1:
                load_trainable(self.model, w)
        if n_ckpt == 0:
            load_trainable(self.model, from_record(content["arrays"]))
        scorer = self.scorer(scoring if n_ckpt else None)
        ctx = self.scorer_context(self.train, self.model)
        if self.collab.oracle:
            scores = oracle_scores(self.train)
            kept, measured = scores > 0.5, {"rule": "oracle"}
        else:
            scores = np.asarray(scorer.score(ctx), dtype=np.float64)
            if "threshold" in config:
                threshold = float(config["threshold"])
                # an unscorable example (NaN) ranks lowest, as the anchors' NaN scores do in the threshold
                kept, measured = np.where(np.isnan(scores), -np.inf, scores) >= threshold, {"rule": "global anchor threshold", "threshold": threshold}
            else:
                kept, measured = scorer.keep(ctx, scores)
                measured = {"rule": scorer.selector.name, **measured}
        kept = np.asarray(kept, dtype=bool)
        report = quality_report(self.train, scores, kept)
        metadata = {"client": self.index, "name": self.name, "scorer": "oracle" if self.collab.oracle else scorer.name, **measured, **report}
        Selection(list(self.train["id"]), scores, kept, metadata).save(self.dir / "selection.parquet")
        nan = int(np.isnan(np.asarray(scores, dtype=np.float64)).sum())
        return {"metrics": {"client": self.index, "pool": int(len(kept)), "kept": int(kept.sum()), "nan_scores": nan}}

    def handle_evaluate(self, content) -> dict:
        local_state = self.dir / "local_model.npz"
        load_trainable(self.model, dict(np.load(local_state)) if local_state.is_file() else from_record(content["arrays"]))
        metrics = self.evaluate(str(content["config"]["split"]))
        return {"metrics": {**metrics, "num-examples": int(len(self.public[str(content["config"]["split"])]))}}


def to_record(arrays: dict[str, np.ndarray]):
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def _reply(msg, out: dict):
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    content = RecordDict({"metrics": MetricRecord(out["metrics"])})
    if "arrays" in out:
        content["arrays"] = to_record(out["arrays"])
    return Message(content=content, reply_to=msg)


def make_client_app(run_dir: Optional[Path] = None):
    """The ClientApp; ``run_dir`` fixed for a simulation, else read from the run config ``run-dir``."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    def side(context) -> ClientSide:
        return ClientSide.get(Path(run_dir or context.run_config["run-dir"]), context)

    @app.train()
    def train(msg, context):
        return _reply(msg, side(context).handle_train(msg.content))

    @app.query("select")
    def select(msg, context):
        return _reply(msg, side(context).handle_select(msg.content))

    @app.evaluate()
    def evaluate_(msg, context):
        return _reply(msg, side(context).handle_evaluate(msg.content))

    return app
