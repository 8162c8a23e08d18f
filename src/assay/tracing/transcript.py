"""A run's transcript (Kuditipudi et al. 2025, arXiv 2510.19796, §2): every training example with the
optimizer step t at which the run trained on it, and its token ids under the run's tokenizer.

Where the step comes from, in this order:

1. the per-sample store (``<run>/dynamics``, written by ``dynamics=losses``, the default): one record
   per (example id, step) the run trained on. ``position=last`` takes each example's last step (its
   most recent exposure, what palimpsestic memorisation is about), ``first`` its first; in a
   one-epoch run they are the same.
2. otherwise the order itself, rebuilt from the run's config for a seeded ``random`` / ``sequential``
   ordering over the kept rows of ``selection.parquet`` (one epoch, one process, no online mixer),
   and accepted only when its hash equals the ``data_order_fingerprint`` the run recorded.

Either way the step labels are those of a uniformly random shuffle when the run's ordering was
``random``: the null of every test in :mod:`assay.tracing.statistics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import UserError, check

POSITIONS = ("last", "first")


@dataclass
class Transcript:
    run_dir: Path
    ids: list[str]
    steps: np.ndarray
    """Optimizer step (1-based) at which each example was trained on; ties within a step."""
    source: str
    """Where the steps came from: ``store`` or ``config``."""
    rows: Any
    """The tokenized training examples, aligned with ``ids`` (``prompt_ids`` and response ids)."""
    tokenizer: Any
    spec: Any
    shuffled: bool
    """The run's ordering was a seeded uniform shuffle (``ordering=random``): the test's null holds."""

    def __len__(self) -> int:
        return len(self.ids)


def check_run(run_dir: str | Path, field: str = "--run") -> Path:
    run = Path(run_dir).expanduser()
    check((run / "config.yaml").is_file() and (run / "tokenizer").is_dir(), field, str(run_dir),
          "is not an assay run directory (no config.yaml and tokenizer/); give the run whose training order is tested")
    return run


def load_spec(run: Path):
    """The groups that rebuild the run's data and order, typed as it saved them in ``config.yaml``."""
    from omegaconf import OmegaConf

    import assay.config  # noqa: F401  (registers every option)
    from assay.registry import from_saved

    raw = OmegaConf.load(run / "config.yaml")
    parts = {g: from_saved(g, raw[g]) for g in ("data", "mixture", "noise", "ordering")}
    return type("RunGroups", (), {**parts, "raw": raw})()


def run_tokenizer(run: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def store_steps(run: Path, position: str) -> tuple[list[str], np.ndarray] | None:
    """(ids, step) from the per-sample store, or None when the run has none."""
    import pandas as pd

    parts = sorted((run / "dynamics").glob("part-*.parquet"))
    if not parts:
        return None
    records = pd.concat([pd.read_parquet(p, columns=["id", "step"]) for p in parts], ignore_index=True)
    steps = records.groupby("id", sort=True)["step"].agg("max" if position == "last" else "min")
    return [str(i) for i in steps.index], steps.to_numpy(dtype=np.int64)


def config_steps(run: Path, spec) -> tuple[list[str], np.ndarray] | None:
    """(ids, step) of the order rebuilt from the config, when it reproduces the recorded fingerprint."""
    import pandas as pd

    from assay.ordering.sampler import OrderedSampler

    summary_file, selection_file = run / "summary.json", run / "selection.parquet"
    if not (summary_file.is_file() and selection_file.is_file()) or spec.ordering.name not in ("random", "sequential"):
        return None
    summary = json.loads(summary_file.read_text())
    trainer, data = spec.raw.trainer, spec.raw.data
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    mixed = spec.raw.get("mixture", {}).get("name") in ("doremi_resample", "odm", "skill_it")
    if devices != 1 or nodes != 1 or mixed:  # several processes, or batches drawn by an online mixer
        return None
    selection = pd.read_parquet(selection_file)
    rows = np.flatnonzero(selection["kept"].to_numpy())
    sampler = OrderedSampler(spec.ordering, rows, selection["score"].to_numpy())
    if sampler.fingerprint() != summary.get("data", {}).get("data_order_fingerprint"):
        return None
    per_step = int(data.batch_size) * int(trainer.get("accumulate_grad_batches", 1) or 1)
    seen = int(summary.get("global_step", 0)) * per_step
    if seen > len(rows):  # beyond one epoch: the steps of later epochs need the data loader's batching
        return None
    order = sampler.permutation(0)[:seen]
    ids = selection["id"].to_numpy()[order]
    return [str(i) for i in ids], np.arange(len(order)) // per_step + 1


def tokenized_train(spec, tokenizer):
    """The run's training split rebuilt from its config, tokenized with its tokenizer."""
    from assay.data import build_examples, load_pool
    from assay.data.collate import row_tokens, tokenize_split

    data = spec.data
    pool = lengths = None
    if spec.mixture.needs_lengths:
        pool = load_pool(data, spec.mixture)
        lengths = row_tokens(tokenize_split(pool["train"], tokenizer, data.format, data.separator, data.max_length), data.format)
    train = build_examples(data, spec.mixture, spec.noise, lengths, pool).splits["train"]
    return tokenize_split(train, tokenizer, data.format, data.separator, data.max_length, data.chat_template)


def load_transcript(run_dir: str | Path, position: str = "last") -> Transcript:
    check(position in POSITIONS, "--position", position, f"must be one of {list(POSITIONS)}")
    run = check_run(run_dir)
    spec = load_spec(run)
    found, source = store_steps(run, position), "store"
    if found is None:
        found, source = config_steps(run, spec), "config"
    if found is None:
        raise UserError("--run", str(run_dir), "has no recorded training order: no per-sample store (dynamics/, written by "
                        "dynamics=losses) and no order rebuilt from its config matches its data_order_fingerprint; "
                        "train with dynamics=losses to record one")
    ids, steps = found
    tokenizer = run_tokenizer(run)
    train = tokenized_train(spec, tokenizer)
    row_of = {str(i): r for r, i in enumerate(train["id"])}
    missing = [i for i in ids if i not in row_of]
    check(not missing, "--run", str(run_dir), f"its data could not be rebuilt from config.yaml: {len(missing)} of the {len(ids)} "
          f"trained ids are not in it (e.g. {missing[:2]})")
    rows = train.select([row_of[i] for i in ids])
    return Transcript(run, ids, np.asarray(steps), source, rows, tokenizer, spec, spec.ordering.name == "random")
