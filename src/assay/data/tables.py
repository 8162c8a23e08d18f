"""Tabular sources (config group ``data``): Hub datasets and local JSONL / Parquet files, each row
mapped onto our columns by its ``data.schema`` (``assay.data.schemas``); local files are checked
before loading (``assay.data.file_checks``)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from omegaconf import MISSING

from assay.data.file_checks import check_json_lines, check_parquet, check_utf8, describe_value, error_reason, is_blank
from assay.data.schemas import LABEL, ROW_COLUMNS, SCHEMAS, lookup_schema
from assay.data.sources import SPLITS, DataConfig
from assay.errors import UserError, check
from assay.lazy import datasets
from assay.registry import register


@dataclass
class TableData(DataConfig):
    """Shared fields of the tabular sources (Hub datasets and local files)."""

    schema: str = "plain"
    """How rows map to our columns: ``plain`` (via ``columns``), ``alpaca`` (instruction/input/output),
    ``hh`` (Anthropic HH full transcripts), ``ultrafeedback`` (message lists, binarized), ``messages``
    (conversations: ``messages`` for SFT; ``chosen``/``rejected`` message lists, with or without a
    ``prompt`` message list, for preferences; the last assistant message is the trained reply)."""
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
        check(self.format != "unpaired" or self.schema == "plain", "data.schema", self.schema,
              "unpaired rows (prompt, completion, label) are read with schema=plain (map columns with data.columns)")
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            check(0.0 <= v < 0.5, f"data.{key}", v, "must be in [0, 0.5)")

    # ---- row mapping (assay.data.schemas) -------------------------------------------------------
    def _column(self, ours: str) -> str:
        return self.columns.get(ours, ours)

    def _required_raw_columns(self) -> list[str]:
        return lookup_schema(self.schema).required(self._column, self.format, self.text_columns)

    def _text_raw_columns(self) -> list[str]:
        """The raw columns that must hold a string in every row (prompt, completion, ...)."""
        return lookup_schema(self.schema).text_columns(self._column, self.format, self.text_columns)

    def _map_row(self, row: dict) -> dict:
        return lookup_schema(self.schema).map_row(row, self._column, self.format, self.prompt_template)

    def _unpaired_from_pairs(self, ds: datasets.Dataset) -> datasets.Dataset:
        """``format=unpaired`` on a file of pairs (``chosen`` and ``rejected``, no ``label``): each pair
        becomes a desirable row (its chosen response, ``<id>/desirable``) and an undesirable one (its
        rejected response, ``<id>/undesirable``), in the same split. Other files pass unchanged."""
        chosen, rejected, completion, label = (self._column(c) for c in ("chosen", "rejected", "completion", LABEL))
        if self.format != "unpaired" or label in ds.column_names or not {chosen, rejected} <= set(ds.column_names):
            return ds
        has_id = "id" in ds.column_names

        def expand(batch: dict[str, list]) -> dict[str, list]:
            n = len(batch[chosen])
            out = {k: [v for x in values for v in (x, x)] for k, values in batch.items() if k not in (chosen, rejected, completion)}
            out[completion] = [t for pair in zip(batch[chosen], batch[rejected]) for t in pair]
            out[label] = [True, False] * n
            if has_id:
                out["id"] = [f"{i}/{kind}" for i in batch["id"] for kind in ("desirable", "undesirable")]
            return out

        return ds.map(expand, batched=True, remove_columns=ds.column_names, desc="unpairing the pairs")

    def _check_columns(self, columns: "set[str] | list[str]", split: str) -> None:
        """The raw columns the format and schema need are among ``columns`` (a file of pairs counts as
        unpaired rows under ``format=unpaired``: :meth:`_unpaired_from_pairs`)."""
        present = set(columns)
        chosen, rejected, completion, label = (self._column(c) for c in ("chosen", "rejected", "completion", LABEL))
        if self.format == "unpaired" and label not in present and {chosen, rejected} <= present:
            present |= {completion, label}
        missing = [c for c in self._required_raw_columns() if c not in present]
        if missing:
            raise UserError(
                "data.columns",
                dict(self.columns),
                f"{split} split lacks column(s) {missing} needed for format={self.format}, schema={self.schema} "
                f"(it has {sorted(columns) if isinstance(columns, set) else list(columns)}); map them with data.columns.<ours>=<theirs>",
            )

    def _normalise(self, ds: datasets.Dataset, split: str, default_source: str) -> datasets.Dataset:
        ds = self._unpaired_from_pairs(ds)
        self._check_columns(ds.column_names, split)
        has_id = "id" in ds.column_names
        source = self.source_name or default_source

        def convert(row: dict, index: int) -> dict:
            out = self._map_row(row)
            out["id"] = str(row["id"]) if has_id else f"{source}/{split}/{index:07d}"
            out["source"] = str(row[self.source_column]) if self.source_column else source
            out["difficulty"] = -1 if row.get("difficulty") is None else int(float(row["difficulty"]))  # checked in _assemble
            out["answer"] = out.get("completion", out.get("chosen", ""))
            return out

        absent = [c for c in self.keep_columns if c not in ds.column_names]
        if absent:
            raise UserError("data.keep_columns", list(self.keep_columns), f"{split} split lacks column(s) {absent} (it has {ds.column_names})")
        keep = set(self.text_columns) | set(ROW_COLUMNS.get(self.format, ())) | {"id", "source", "difficulty", "answer", "prompt_messages"} | set(self.keep_columns)
        ds = ds.map(convert, with_indices=True, desc=f"mapping {split} rows")
        return ds.remove_columns([c for c in ds.column_names if c not in keep])

    def _file_field(self, split: str) -> tuple[str, str]:
        """The config field (and its value) that names where ``split``'s rows come from."""
        return "data", self.name

    def _check_difficulty(self, ds: datasets.Dataset, split: str) -> None:
        """The optional ``difficulty`` column holds whole numbers (ints, integral floats, digit
        strings) or nulls; anything else is named with its row (0-based, in the source's order)."""
        if "difficulty" not in ds.column_names:
            return
        for index, value in enumerate(ds["difficulty"]):
            if value is None:
                continue
            try:
                whole = not isinstance(value, bool) and float(value).is_integer()
            except (TypeError, ValueError):
                whole = False
            if not whole:
                field_name, where = self._file_field(split)
                raise UserError(field_name, where, f"column 'difficulty' must hold whole numbers (or null); row {index} of the {split} split has {value!r}")

    def _check_text_types(self, ds: datasets.Dataset, split: str) -> None:
        """Every text column holds a string in every row (not a number, a list or null); the first
        row that does not is named (0-based, in the source's order). Local files are checked when
        they are first read (``check_files``); this covers Hub datasets."""
        for column in self._text_raw_columns():
            if column not in ds.column_names:
                continue  # reported with the other absent columns in _normalise
            feature = ds.features[column]
            if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string") and ds._indices is None and ds.data.column(column).null_count == 0:
                continue
            for index, value in enumerate(ds[column]):
                if not isinstance(value, str):
                    field_name, where = self._file_field(split)
                    raise UserError(field_name, where, f"column {column!r} must be text (a string) in every row; row {index} of the {split} split has {describe_value(value)}")

    def _assemble(self, raw: dict[str, datasets.Dataset], default_source: str) -> datasets.DatasetDict:
        """Map raw splits to ours and carve val/test out of train where they are absent."""
        check("train" in raw, "data", self.name, "a train split is required")
        for split, ds in raw.items():
            self._check_difficulty(ds, split)
            self._check_text_types(ds, split)
        train = raw["train"]
        for split, frac in (("test", self.test_fraction), ("val", self.val_fraction)):
            if split not in raw:
                if frac <= 0:
                    raise UserError(f"data.{split}_fraction", frac, f"no {split} split given, so it must be > 0")
                if round(frac * len(train)) < 1 or len(train) - round(frac * len(train)) < 1:
                    field_name, where = self._file_field("train")
                    raise UserError(field_name, where, f"has {len(train)} training row(s), too few to carve a {split} split of "
                                    f"data.{split}_fraction={frac} from; give more rows or a {split} split of its own")
                parts = train.train_test_split(test_size=frac, seed=self.seed, shuffle=True)
                train, raw[split] = parts["train"], parts["test"]
        raw["train"] = train
        return datasets.DatasetDict({s: self._normalise(raw[s], s, default_source) for s in SPLITS})


@contextmanager
def _library_log_to_file():
    """``datasets`` logs a failed read as an ``[ERROR]`` line of its own before it raises, which would
    print ahead of our one-line error: while a file is loaded its records go to the run's log only."""
    import logging

    from assay.run.log import to_file

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    lib = logging.getLogger("datasets")
    saved = lib.handlers[:], lib.propagate
    lib.handlers, lib.propagate = [Keep()], False
    try:
        yield
    finally:
        lib.handlers, lib.propagate = saved
        for r in records:
            to_file("%s [%s] %s", r.name, r.levelname, r.getMessage())


def _load_or_explain(field_name: str, value: str, **kwargs) -> datasets.DatasetDict:
    try:
        with _library_log_to_file():
            return datasets.load_dataset(**kwargs)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(field_name, value, f"could not be loaded ({error_reason(e)})") from None
    except Exception as e:  # corrupt files surface as arrow/json decoding errors
        while e.__cause__ is not None and type(e).__name__ == "DatasetGenerationError":
            e = e.__cause__  # "An error occurred while generating the dataset": the reader's own error says which
        raise UserError(field_name, value, f"is unreadable ({type(e).__name__}: {error_reason(e)})") from None


_CHECKED: set[tuple] = set()
"""Files whose contents passed ``check_files`` (path, size, mtime, builder, text columns): the
preflight checks every job's files, and the run that follows in the same process, or another job
reading the same file, does not read them a second time."""


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

    def _file_field(self, split: str) -> tuple[str, str]:
        return "data.path", self.path


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
    text_file: ClassVar[bool] = True
    """Whether the files are text (checked for emptiness and UTF-8 before loading)."""
    """The ``load_dataset`` builder that reads these files."""

    def _files(self) -> dict[str, str]:
        files = {"train": self.train_file, "val": self.val_file, "test": self.test_file}
        return {split: path for split, path in files.items() if path is not None}

    def check_files(self) -> None:
        for split, path in self._files().items():
            self._check_file(split, path)

    def _check_file(self, split: str, path: str) -> Path:
        """The file of ``split`` exists and is readable, and its rows are what the loader needs:
        JSON-lines: UTF-8, one JSON object per line; Parquet: a readable file with rows; both: the
        text columns hold strings. Read once per file (``_CHECKED``)."""
        field_name = f"data.{split}_file"
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError(field_name, path, "file does not exist")
        if not os.access(p, os.R_OK):
            raise UserError(field_name, path, "file is not readable")
        stat = p.stat()
        key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns, self.builder, tuple(self._text_raw_columns()))
        if key in _CHECKED:
            return p
        if self.text_file:
            if is_blank(p):
                raise UserError(field_name, path, "file is empty (a JSON-lines file needs one object per line)")
            check_utf8(p, field_name, path)
            columns = check_json_lines(p, field_name, path, self._text_raw_columns())
        else:
            columns = check_parquet(p, field_name, path, self._text_raw_columns())
        self._check_columns(columns, split)
        _CHECKED.add(key)
        return p

    def load(self) -> datasets.DatasetDict:
        raw = {}
        for split, path in self._files().items():
            p = self._check_file(split, path)
            ds = _load_or_explain(f"data.{split}_file", path, path=self.builder, data_files=str(p), split="train")
            if len(ds) == 0:
                raise UserError(f"data.{split}_file", path, "file has no rows")
            raw[split] = ds
        return self._assemble(raw, Path(self.train_file).stem)

    def _file_field(self, split: str) -> tuple[str, str]:
        # val/test carved from train come from the train file
        path = {"val": self.val_file, "test": self.test_file}.get(split)
        return (f"data.{split}_file", path) if path is not None else ("data.train_file", self.train_file)


@register("data", "parquet")
@dataclass
class ParquetData(JsonlData):
    """Local Parquet files, one per split (val/test carved from train when not given)."""

    name: str = "parquet"
    builder: ClassVar[str] = "parquet"
    text_file: ClassVar[bool] = False
