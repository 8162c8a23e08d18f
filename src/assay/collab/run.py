"""``assay-train collab=<preset>``: check the clients, write the run directory, run the Flower
simulation, gather the parties' artefacts into one ``summary.json`` (the format of any run, so
``assay-compare`` and sweeps read it).

    assay-train collab=clues3                                       # 3 clients, CLUES + FedAvg
    assay-train collab=skills4 selection=el2n selection/selector=anchor_quantile
    assay-train -m collab=skills4 collab/aggregation=fedavg,ties,ties_factors,local seed=0,1,2
    assay-train collab=skills4 model.lora.r=8 collab/aggregation=ties collab.aggregation.density=0.3
    assay-train collab=skills4 hydra.run.dir=<dir> ckpt_path=last   # resume at the last finished round
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from assay.errors import UserError, check


def run_collab(cfg: DictConfig) -> dict[str, Any]:
    import pytorch_lightning as pl
    from datasets import DatasetDict

    from assay.collab.apps import CLIENTS_DIR, SERVER_DIR, uses_anchor
    from assay.collab.data import check_anchor, plan_clients
    from assay.collab.outcome import write_run_info
    from assay.collab.rules import rule_of
    from assay.config import validate
    from assay.data import build_examples
    from assay.heldout import write_heldout_ids
    from assay.models.build import save_model
    from assay.run.preemption import requeued
    from assay.registry import to_object
    from assay.run.dirs import job_choices, job_config

    spec = validate(cfg)
    collab = to_object(cfg.collab)
    run_dir = Path(cfg.paths.output_dir)
    check(spec.noise.name == "none", "noise", spec.noise.name, "a collaborative run corrupts each client's data itself: keep noise=none and set collab.corruption=[rate per client]")
    rule = rule_of(collab.aggregation)  # the rule's own fields, typed and range-checked
    if rule.needs_lora:
        check(spec.model.lora.r > 0, "collab/aggregation", rule.name, "merges LoRA adapters, and this run has none: set model.lora.r > 0 (e.g. model.lora.r=8)")
    check(not collab.oracle or collab.corruption, "collab.oracle", True, "keeps the clean examples by their ground-truth flags; set collab.corruption so there are flags")

    examples = build_examples(spec.data, spec.mixture, spec.noise)
    train = examples.splits["train"]
    clients = plan_clients(train, collab)
    if uses_anchor(spec, collab):
        split = spec.selection.selector.anchor_split()
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
    write_heldout_ids(examples.splits, run_dir)  # the public val / test splits every party is measured on
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    spec.trainer.apply_threads()

    if not (run_dir / "global" / "model" / "config.json").is_file():
        # The base every party starts from. A model whose tokenizer is trained on the corpus trains
        # it on the public val split only: no client's text shapes the shared vocabulary.
        public = DatasetDict({"train": examples.splits["val"], "val": examples.splits["val"]})
        base = replace(spec.model, lora=replace(spec.model.lora, r=0))
        model, tokenizer = base.build(public)
        rule.check_model(model)  # e.g. FedBiOT's adapter must leave layers for its emulator: one line, before any party starts
        save_model(model, tokenizer, run_dir / "global")
    write_run_info(run_dir, cfg.stage, {**job_choices(cfg), "collab": collab.name, "aggregation": rule.name})
    if collab.prepare_only:
        print(f"[assay] prepared {run_dir}: flwr run <app> --run-config 'run-dir=\"{run_dir.resolve()}\"' (see README, Collaborative training)", flush=True)
        return {"status": "prepared", "run_dir": str(run_dir), "metrics": {}}

    (run_dir / SERVER_DIR / "error.json").unlink(missing_ok=True)
    simulate(run_dir, len(clients.names), collab.cpus)
    error = run_dir / SERVER_DIR / "error.json"
    if error.is_file():
        e = json.loads(error.read_text())
        if "field" in e:
            raise UserError(e["field"], e["value"], e["allowed"])
        raise RuntimeError(f"the collaborative run failed on the server:\n{e['traceback']}")
    state = json.loads((run_dir / SERVER_DIR / "state.json").read_text())
    if not state.get("done") or not (run_dir / "summary.json").is_file():
        raise RuntimeError(f"the simulation ended before the last round ({state.get('rounds_done')} of {collab.rounds} done); rerun with ckpt_path=last to resume")

    return json.loads((run_dir / "summary.json").read_text())


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
