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

from assay.lazy import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.errors import UserError, check
from assay.registry import register

CHAT_TEMPLATE_MODES = ("messages", "always", "never")
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
    keep_columns: list[str] = field(default_factory=list)
    """Columns of the data kept on every example beyond the text ones, e.g. a precomputed
    ``embedding`` (list of floats) for ``selection.embedder=column``. A component that reads a
    column (that embedder) adds it here itself."""
    chat_template: str = "messages"
    """When to render prompts with the tokenizer's chat template (TRL's and LLaMA-Factory's
    conversation format; the loss stays on the reply): ``messages`` (conversation data only, as TRL
    does), ``always`` (plain prompt rows too, as one user turn: for instruct models), ``never``. A
    tokenizer without a template (``tiny_llama``) uses the plain ``role: content`` lines instead."""
    seed: int = II("seed")

    def __post_init__(self) -> None:
        check(self.chat_template in CHAT_TEMPLATE_MODES, "data.chat_template", self.chat_template, f"must be one of {list(CHAT_TEMPLATE_MODES)}")
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
    pair_kinds: list[str] = field(default_factory=lambda: ["exact_vs_near"])
    """Preference pairs of the training split: each prompt gets one pair of a kind drawn uniformly from
    this list, ``<chosen>_vs_<rejected>`` over ``exact``, ``near`` (one symbol wrong), ``far`` (right shape,
    wrong content) and ``garbage``: ``exact_vs_near`` is the hardest to tell apart, ``exact_vs_garbage`` the
    easiest, ``near_vs_far`` a mixed-informativeness pair where both are wrong. Val/test keep ``exact_vs_near``.
    Every skills pair carries its ground-truth ``chosen_reward``, ``rejected_reward`` and ``reward_gap``
    (assay.data.rewards)."""
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

        from assay.data.skills import RESPONSE_KINDS

        check(len(self.pair_kinds) > 0, "data.pair_kinds", list(self.pair_kinds), "must name at least one pair kind")
        for kind in self.pair_kinds:
            chosen, sep, rejected = str(kind).partition("_vs_")
            check(
                sep == "_vs_" and chosen in RESPONSE_KINDS and rejected in RESPONSE_KINDS and RESPONSE_KINDS.index(chosen) < RESPONSE_KINDS.index(rejected),
                "data.pair_kinds", kind, f"each kind is '<chosen>_vs_<rejected>' with chosen rated above rejected, from {list(RESPONSE_KINDS)}",
            )
        if list(self.pair_kinds) != ["exact_vs_near"]:
            check(self.format == "preference", "data.pair_kinds", list(self.pair_kinds), "needs data.format=preference")
            check(self.rating_gaps is None, "data.pair_kinds", list(self.pair_kinds), "draws one pair per prompt; data.rating_gaps (Curry-DPO) makes its own pairs: set one of them")
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
        from assay.data.skills import generate_skills, graded_pairs

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
            if split == "train" and self.format == "preference" and list(self.pair_kinds) != ["exact_vs_near"]:
                rows = graded_pairs(rows, list(self.pair_kinds), self.seed)
            if self.format == "preference":
                rows = [with_rewards(r) for r in rows]
            out[split] = datasets.Dataset.from_list(rows)
        return datasets.DatasetDict(out)


def with_rewards(row: dict) -> dict:
    """The pair's ground-truth rewards against the prompt's exact answer (assay.data.rewards)."""
    from assay.data.rewards import skill_reward

    chosen, rejected = skill_reward(row["answer"], row["chosen"]), skill_reward(row["answer"], row["rejected"])
    return {**row, "chosen_reward": chosen, "rejected_reward": rejected, "reward_gap": chosen - rejected}


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


# --------------------------------------------------------------------------------------------------
# Chat data: conversations as lists of {role, content} messages (TRL's conversational format; the
# ShareGPT spelling {from: human|gpt, value} of LLaMA-Factory is read too).

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def as_messages(value: Any, field_name: str) -> list[dict[str, str]]:
    """A conversation as [{role, content}, ...]; one line naming the field when it is not one."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise UserError(field_name, str(value)[:80], "must be a list of {role, content} messages")
    out = []
    for m in value:
        role = m.get("role") or SHAREGPT_ROLES.get(str(m.get("from")))
        content = m.get("content", m.get("value"))
        if role is None or content is None:
            raise UserError(field_name, str(m)[:80], "each message needs a role and a content")
        out.append({"role": str(role), "content": str(content)})
    return out


def split_last_reply(messages: list[dict[str, str]], field_name: str) -> tuple[list[dict[str, str]], str]:
    """(the conversation before the last assistant message, that message's content)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise UserError(field_name, str(messages)[-80:], "must end with an assistant message (the reply that is trained on)")
    return messages[:-1], messages[-1]["content"]


def plain_chat(messages: list[dict[str, str]]) -> str:
    """The plain template, for tokenizers without a chat template (``tiny_llama``) and for every
    text-based component (noise, embeddings): one ``role: content`` line per message, then
    ``assistant:``; the reply follows after ``data.separator``."""
    return "\n".join([f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"])


SCHEMAS = ("plain", "alpaca", "hh", "ultrafeedback", "messages")


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
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            check(0.0 <= v < 0.5, f"data.{key}", v, "must be in [0, 0.5)")

    # ---- row mapping ---------------------------------------------------------------------------
    def _required_raw_columns(self) -> list[str]:
        if self.schema == "messages":
            if self.format == "sft":
                return [self.columns.get("messages", "messages")]
            return [self.columns.get("chosen", "chosen"), self.columns.get("rejected", "rejected")]
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
        if self.schema == "messages":
            return self._map_conversation(row, col)
        if self.schema == "ultrafeedback":
            out = {"prompt": row[col("prompt")]}
            if self.format == "sft":
                out["completion"] = _last_assistant(row[col("chosen")] if col("chosen") in row else row[col("completion")])
            else:
                out["chosen"], out["rejected"] = _last_assistant(row[col("chosen")]), _last_assistant(row[col("rejected")])
            return out
        return {c: row[col(c)] for c in self.text_columns}

    def _map_conversation(self, row: dict, col: Any) -> dict:
        """Message lists -> ``prompt_messages`` (the conversation before the reply) and the reply text;
        ``prompt`` is the plain rendering of the conversation."""
        if self.format == "sft":
            messages = as_messages(row[col("messages")], f"data.columns.messages ({col('messages')})")
            context, reply = split_last_reply(messages, col("messages"))
            out = {"completion": reply}
        else:
            chosen = as_messages(row[col("chosen")], col("chosen"))
            rejected = as_messages(row[col("rejected")], col("rejected"))
            prompt = row.get(col("prompt"))
            if isinstance(prompt, list):  # explicit prompt: chosen/rejected hold the reply alone
                context = as_messages(prompt, col("prompt"))
            else:  # implicit prompt: two whole conversations that differ in the last reply
                context = chosen[:-1]
                if rejected[:-1] != context:
                    raise UserError(col("rejected"), str(rejected)[:80], "must share every message but the last with chosen (or give a prompt message list)")
            out = {"chosen": split_last_reply(chosen, col("chosen"))[1], "rejected": split_last_reply(rejected, col("rejected"))[1]}
        if not context:
            raise UserError(col("messages") if self.format == "sft" else col("chosen"), "[assistant only]", "needs at least one message before the assistant reply")
        return {"prompt": plain_chat(context), "prompt_messages": context, **out}

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
            out["difficulty"] = -1 if row.get("difficulty") is None else int(float(row["difficulty"]))  # checked in _assemble
            out["answer"] = out.get("completion", out.get("chosen", ""))
            return out

        absent = [c for c in self.keep_columns if c not in ds.column_names]
        if absent:
            raise UserError("data.keep_columns", list(self.keep_columns), f"{split} split lacks column(s) {absent} (it has {ds.column_names})")
        keep = set(self.text_columns) | {"id", "source", "difficulty", "answer", "prompt_messages"} | set(self.keep_columns)
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

    def _assemble(self, raw: dict[str, datasets.Dataset], default_source: str) -> datasets.DatasetDict:
        """Map raw splits to ours and carve val/test out of train where they are absent."""
        check("train" in raw, "data", self.name, "a train split is required")
        for split, ds in raw.items():
            self._check_difficulty(ds, split)
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


def _reason(e: BaseException) -> str:
    """The first line of an exception's message (at most 200 characters), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _load_or_explain(field_name: str, value: str, **kwargs) -> datasets.DatasetDict:
    try:
        return datasets.load_dataset(**kwargs)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(field_name, value, f"could not be loaded ({_reason(e)})") from None
    except Exception as e:  # corrupt files surface as arrow/json decoding errors
        raise UserError(field_name, value, f"is unreadable ({type(e).__name__}: {_reason(e)})") from None


def _blank(path: Path) -> bool:
    """True when the file holds nothing but whitespace (read until the first other byte)."""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def check_utf8(path: Path, field_name: str, value: str) -> None:
    """Text files must be UTF-8 (JSON requires it). Arrow's JSON reader accepts other bytes and only
    fails when a row is read back, deep inside training setup; here the file is decoded once, in
    chunks, and the first bad byte is reported with its line."""
    import codecs

    decoder, line, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                bad = offset + e.start
                line += chunk[: e.start].count(b"\n")
                raise UserError(field_name, value, f"is not UTF-8 text: byte 0x{chunk[e.start]:02x} at offset {bad} (line {line}); re-encode it as UTF-8") from None
            line += chunk.count(b"\n")
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UserError(field_name, value, f"is not UTF-8 text: it ends inside a multi-byte character (offset {offset})") from None


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
            if self.text_file:
                if _blank(p):
                    raise UserError(f"data.{split}_file", path, "file is empty (a JSON-lines file needs one object per line)")
                check_utf8(p, f"data.{split}_file", path)
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
