"""Data sources (config group ``data``): load examples into one ``datasets.DatasetDict``.

Every split comes out with the same columns, whatever the source:

    id, source, difficulty, prompt, completion            (format: sft)
    id, source, difficulty, prompt, chosen, rejected      (format: preference)

plus ``answer`` (the exact gold answer, used for exact-match evaluation) and, where the source has
them, ``responses`` / ``ratings`` (several rated responses per prompt, for Curry-DPO).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.registry import register

FORMATS = {"sft": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}
SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    """Base of the ``data`` group: format, batching and the data seed."""

    name: str = MISSING
    format: str = "sft"
    """``sft`` (prompt, completion) or ``preference`` (prompt, chosen, rejected)."""
    batch_size: int = 32
    """Training examples (pairs, for preference data) per optimizer step and device."""
    eval_batch_size: int = 128
    max_length: int = 256
    """Tokens per sequence (prompt + completion); longer prompts are cut from the left."""
    separator: str = " "
    """Inserted between prompt and completion when they are tokenized separately."""
    max_train_examples: Optional[int] = None
    """Keep a seeded random subset of at most this many training examples (quick runs, debugging)."""
    max_eval_examples: Optional[int] = None
    """The same cap for the val and test splits."""
    seed: int = II("seed")

    def __post_init__(self) -> None:
        for key in ("max_train_examples", "max_eval_examples"):
            if getattr(self, key) is not None:
                check(getattr(self, key) > 0, f"data.{key}", getattr(self, key), "must be a positive integer (or null)")
        check(self.format in FORMATS, "data.format", self.format, f"must be one of {sorted(FORMATS)}")
        check(self.batch_size > 0, "data.batch_size", self.batch_size, "must be a positive integer")
        check(self.eval_batch_size > 0, "data.eval_batch_size", self.eval_batch_size, "must be a positive integer")
        check(self.max_length > 1, "data.max_length", self.max_length, "must be an integer > 1")

    @property
    def text_columns(self) -> tuple[str, ...]:
        return FORMATS[self.format]

    def load(self) -> datasets.DatasetDict:  # pragma: no cover - every entry overrides it
        raise TypeError(f"{type(self).__name__} does not implement load()")

    def domain_names(self) -> Optional[list[str]]:
        """The domain names (``source`` values) this config will produce, when known before loading
        (lets a mixture that names an unknown domain fail before anything is built); None = unknown."""
        return None

    def domain_weights(self) -> dict[str, float]:
        """Relative weight per domain declared by the data itself (``data.sources.<d>.weight``);
        multiplies the mixture's proportions. Empty = every domain 1."""
        return {}

    def capped(self, splits: datasets.DatasetDict) -> datasets.DatasetDict:
        """Apply the example caps: a seeded subset that keeps the original row order (and so ids)."""
        out = {}
        for split, ds in splits.items():
            cap = self.max_train_examples if split == "train" else self.max_eval_examples
            if cap is not None and len(ds) > cap:
                rows = np.sort(np.random.default_rng(self.seed).permutation(len(ds))[:cap])
                ds = ds.select(rows)
            out[split] = ds
        return datasets.DatasetDict(out)


@register("data", "skills")
@dataclass
class SkillsData(DataConfig):
    """Embedded synthetic multi-skill corpus (copy, reverse, sort, count, add) with difficulty levels."""

    name: str = "skills"
    domains: list[str] = field(default_factory=lambda: ["copy", "reverse", "sort", "count", "add"])
    train_per_domain: int = 1500
    val_per_domain: int = 40
    test_per_domain: int = 100
    difficulties: list[int] = field(default_factory=lambda: [1, 2, 3])
    max_length: int = 40
    batch_size: int = 64
    rating_gaps: Optional[list[float]] = None
    """Curry-DPO pairs (Pattnaik et al., EMNLP 2024, arXiv 2403.07230): null keeps one pair per prompt
    (exact vs near miss); a list turns each training prompt into pairs of its top-rated response vs
    each other response whose rating gap is listed (ratings 3/2/1/0: gap 3 = vs garbage, easiest;
    gap 1 = vs near miss, hardest), ordered easy → hard. Val/test keep the standard pair, so every
    stage of a curriculum is measured on the same pairs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from assay.data.skills import GENERATORS

        if self.rating_gaps is not None:
            check(self.format == "preference", "data.rating_gaps", list(self.rating_gaps), "needs data.format=preference")
            check(len(self.rating_gaps) > 0 and all(g > 0 for g in self.rating_gaps), "data.rating_gaps", list(self.rating_gaps), "must list rating gaps > 0 (or be null)")

        for d in self.domains:
            check(d in GENERATORS, "data.domains", d, f"each domain must be one of {sorted(GENERATORS)}")
        check(len(self.domains) > 0, "data.domains", self.domains, "must name at least one domain")
        for lvl in self.difficulties:
            check(lvl in (1, 2, 3), "data.difficulties", lvl, "levels must be 1, 2 or 3")
        for key in ("train_per_domain", "val_per_domain", "test_per_domain"):
            check(getattr(self, key) > 0, f"data.{key}", getattr(self, key), "must be a positive integer")

    def domain_names(self) -> Optional[list[str]]:
        return [str(d) for d in self.domains]

    def load(self) -> datasets.DatasetDict:
        from assay.data.skills import generate_skills

        raw = generate_skills(
            self.domains,
            {"train": self.train_per_domain, "val": self.val_per_domain, "test": self.test_per_domain},
            list(self.difficulties),
            self.seed,
        )
        out = {}
        for split, rows in raw.items():
            for r in rows:
                if self.format == "sft":
                    r["completion"] = r["answer"]
                else:  # rejected = the near miss, a plausible wrong answer
                    r["chosen"], r["rejected"] = r["responses"][0], r["responses"][1]
            if split == "train" and self.format == "preference" and self.rating_gaps is not None:
                rows = rating_gap_pairs(rows, list(self.rating_gaps))
            out[split] = datasets.Dataset.from_list(rows)
        return datasets.DatasetDict(out)


def rating_gap_pairs(rows: list[dict], gaps: list[float]) -> list[dict]:
    """Curry-DPO's multi-pair expansion: for each prompt, (top-rated response, other response) for
    every other response whose rating gap is in ``gaps``; ids ``<prompt id>/vs<index>``. Pairs come
    out ordered by gap, large (easy) first, prompts in their original order within a gap."""
    out = []
    for r in rows:
        ratings, responses = r["ratings"], r["responses"]
        top = max(range(len(ratings)), key=lambda j: ratings[j])
        for j in range(len(ratings)):
            gap = ratings[top] - ratings[j]
            if j != top and gap in gaps and responses[j] != responses[top]:
                out.append({**r, "id": f"{r['id']}/vs{j}", "chosen": responses[top], "rejected": responses[j], "rating_gap": float(gap)})
    return sorted(out, key=lambda x: -x["rating_gap"])


# --------------------------------------------------------------------------------------------------
# Tabular sources: Hub datasets and local files, mapped onto the columns above.


def _last_assistant(messages: Any) -> str:
    """UltraFeedback-binarized stores a conversation as a list of {role, content} messages."""
    if isinstance(messages, str):
        return messages
    for m in reversed(messages):
        if m.get("role") == "assistant":
            return m.get("content", "")
    return messages[-1].get("content", "") if messages else ""


def _split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Anthropic HH stores full transcripts; the prompt is everything up to the last 'Assistant:' turn
    they share, the responses are what follows it."""
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker)
    if cut < 0:
        return "", chosen, rejected
    prompt = chosen[: cut + len(marker)]
    if not rejected.startswith(prompt):
        common = os.path.commonprefix([chosen, rejected])
        cut = common.rfind(marker)
        prompt = common[: cut + len(marker)] if cut >= 0 else common
    return prompt, chosen[len(prompt):].strip(), rejected[len(prompt):].strip()


SCHEMAS = ("plain", "alpaca", "hh", "ultrafeedback")


@dataclass
class TableData(DataConfig):
    """Shared fields of the tabular sources (Hub datasets and local files)."""

    schema: str = "plain"
    """How rows map to our columns: ``plain`` (via ``columns``), ``alpaca`` (instruction/input/output),
    ``hh`` (Anthropic HH full transcripts), ``ultrafeedback`` (message lists, binarized)."""
    columns: dict[str, str] = field(default_factory=dict)
    """Our column -> the file's column, e.g. ``{prompt: question, completion: answer}``."""
    prompt_template: str = "{instruction}\n\n{input}"
    """Alpaca schema: how instruction and input become the prompt (empty input drops the blank line)."""
    source_name: Optional[str] = None
    """Domain name written to ``source`` (default: derived from the path)."""
    source_column: Optional[str] = None
    """A column whose value is the per-row domain, for multi-domain files."""
    val_fraction: float = 0.05
    """Carved from train (seeded) when no validation split exists."""
    test_fraction: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.schema in SCHEMAS, "data.schema", self.schema, f"must be one of {list(SCHEMAS)}")
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            check(0.0 <= v < 0.5, f"data.{key}", v, "must be in [0, 0.5)")

    # ---- row mapping ---------------------------------------------------------------------------
    def _required_raw_columns(self) -> list[str]:
        if self.schema == "alpaca":
            return [self.columns.get("instruction", "instruction"), self.columns.get("output", "output")]
        if self.schema == "hh":
            return [self.columns.get("chosen", "chosen"), self.columns.get("rejected", "rejected")]
        return [self.columns.get(c, c) for c in self.text_columns]

    def _map_row(self, row: dict) -> dict:
        col = lambda c: self.columns.get(c, c)  # noqa: E731
        if self.schema == "alpaca":
            instruction, extra = row[col("instruction")], row.get(col("input")) or ""
            prompt = self.prompt_template.format(instruction=instruction, input=extra) if extra else instruction
            out = {"prompt": prompt, "completion": row[col("output")]}
            if self.format == "preference":
                raise UserError("data.schema", "alpaca", "alpaca rows have one response; use format=sft")
            return out
        if self.schema == "hh":
            prompt, chosen, rejected = _split_hh(row[col("chosen")], row[col("rejected")])
            if self.format == "sft":
                return {"prompt": prompt, "completion": chosen}
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if self.schema == "ultrafeedback":
            out = {"prompt": row[col("prompt")]}
            if self.format == "sft":
                out["completion"] = _last_assistant(row[col("chosen")] if col("chosen") in row else row[col("completion")])
            else:
                out["chosen"], out["rejected"] = _last_assistant(row[col("chosen")]), _last_assistant(row[col("rejected")])
            return out
        return {c: row[col(c)] for c in self.text_columns}

    def _normalise(self, ds: datasets.Dataset, split: str, default_source: str) -> datasets.Dataset:
        missing = [c for c in self._required_raw_columns() if c not in ds.column_names]
        if missing:
            raise UserError(
                "data.columns",
                dict(self.columns),
                f"{split} split lacks column(s) {missing} needed for format={self.format}, schema={self.schema} "
                f"(it has {ds.column_names}); map them with data.columns.<ours>=<theirs>",
            )
        has_id = "id" in ds.column_names
        source = self.source_name or default_source

        def convert(row: dict, index: int) -> dict:
            out = self._map_row(row)
            out["id"] = str(row["id"]) if has_id else f"{source}/{split}/{index:07d}"
            out["source"] = str(row[self.source_column]) if self.source_column else source
            out["difficulty"] = int(row["difficulty"]) if "difficulty" in row and row["difficulty"] is not None else -1
            out["answer"] = out.get("completion", out.get("chosen", ""))
            return out

        keep = set(self.text_columns) | {"id", "source", "difficulty", "answer"}
        ds = ds.map(convert, with_indices=True, desc=f"mapping {split} rows")
        return ds.remove_columns([c for c in ds.column_names if c not in keep])

    def _assemble(self, raw: dict[str, datasets.Dataset], default_source: str) -> datasets.DatasetDict:
        """Map raw splits to ours and carve val/test out of train where they are absent."""
        check("train" in raw, "data", self.name, "a train split is required")
        train = raw["train"]
        for split, frac in (("test", self.test_fraction), ("val", self.val_fraction)):
            if split not in raw:
                if frac <= 0:
                    raise UserError(f"data.{split}_fraction", frac, f"no {split} split given, so it must be > 0")
                parts = train.train_test_split(test_size=frac, seed=self.seed, shuffle=True)
                train, raw[split] = parts["train"], parts["test"]
        raw["train"] = train
        return datasets.DatasetDict({s: self._normalise(raw[s], s, default_source) for s in SPLITS})


def _load_or_explain(field_name: str, value: str, **kwargs) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(**kwargs)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(field_name, value, f"could not be loaded ({reason})") from None
    except Exception as e:  # corrupt files surface as arrow/json decoding errors
        raise UserError(field_name, value, f"is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


@dataclass
class HubData(TableData):
    """A dataset loaded with ``datasets.load_dataset`` from the Hub or a local dataset directory."""

    path: str = MISSING
    """Hub id (``Anthropic/hh-rlhf``) or a local directory/script ``load_dataset`` accepts."""
    subset: Optional[str] = None
    """The dataset configuration name (``load_dataset``'s second argument)."""
    revision: Optional[str] = None
    data_files: dict[str, str] = field(default_factory=dict)
    """Split name -> file, for builder paths such as ``json``/``parquet`` (``load_dataset(data_files=...)``)."""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train"})
    """Our split -> the dataset's split, e.g. ``{train: train_prefs, test: test_prefs}``."""

    def load(self) -> datasets.DatasetDict:
        for ours in self.splits:
            check(ours in SPLITS, "data.splits", ours, f"keys must be among {list(SPLITS)}")
        loaded = _load_or_explain(
            "data.path", self.path, path=self.path, name=self.subset, revision=self.revision,
            data_files=dict(self.data_files) if self.data_files else None,
        )
        raw = {}
        for ours, theirs in self.splits.items():
            if theirs not in loaded:
                raise UserError(f"data.splits.{ours}", theirs, f"must be one of the dataset's splits {list(loaded)}")
            raw[ours] = loaded[theirs]
        return self._assemble(raw, Path(self.path.rstrip("/")).name)


@register("data", "hf_sft")
@dataclass
class HubSFTData(HubData):
    """Instruction data from the Hub or a local dataset dir (Alpaca-style or any column mapping)."""

    name: str = "hf_sft"
    format: str = "sft"


@register("data", "hf_preference")
@dataclass
class HubPreferenceData(HubData):
    """Preference pairs from the Hub or a local dataset dir (Anthropic HH, UltraFeedback-binarized, ...)."""

    name: str = "hf_preference"
    format: str = "preference"


@register("data", "jsonl")
@dataclass
class JsonlData(TableData):
    """Local JSON-lines files, one per split (val/test carved from train when not given)."""

    name: str = "jsonl"
    train_file: str = MISSING
    val_file: Optional[str] = None
    test_file: Optional[str] = None
    builder: ClassVar[str] = "json"
    """The ``load_dataset`` builder that reads these files."""

    def load(self) -> datasets.DatasetDict:
        files = {"train": self.train_file, "val": self.val_file, "test": self.test_file}
        raw = {}
        for split, path in files.items():
            if path is None:
                continue
            p = Path(path).expanduser()
            if not p.is_file():
                raise UserError(f"data.{split}_file", path, "file does not exist")
            if not os.access(p, os.R_OK):
                raise UserError(f"data.{split}_file", path, "file is not readable")
            ds = _load_or_explain(f"data.{split}_file", path, path=self.builder, data_files=str(p), split="train")
            if len(ds) == 0:
                raise UserError(f"data.{split}_file", path, "file has no rows")
            raw[split] = ds
        return self._assemble(raw, Path(self.train_file).stem)


@register("data", "parquet")
@dataclass
class ParquetData(JsonlData):
    """Local Parquet files, one per split (val/test carved from train when not given)."""

    name: str = "parquet"
    builder: ClassVar[str] = "parquet"
