"""Data sources (config group ``data``): load examples into one ``datasets.DatasetDict``.

Every split comes out with the same columns, whatever the source:

    id, source, difficulty, prompt, completion            (format: sft)
    id, source, difficulty, prompt, chosen, rejected      (format: preference)
    id, source, difficulty, prompt, completion, label     (format: unpaired; label True = desirable)

plus ``answer`` (the exact gold answer, used for exact-match evaluation) and, where the source has
them, ``responses`` / ``ratings`` (several rated responses per prompt, for Curry-DPO).

This module holds what every source shares (``DataConfig``) and the built-in skills task; the
tabular sources (Hub datasets, JSONL and Parquet files) are in ``assay.data.tables``, their row
schemas in ``assay.data.schemas``, several sources in one run in ``assay.data.multisource``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from assay.lazy import datasets
import numpy as np
from omegaconf import II, MISSING

from assay.data.schemas import FORMATS
from assay.errors import check
from assay.registry import register

CHAT_TEMPLATE_MODES = ("messages", "always", "never")
SPLITS = ("train", "val", "test")
PAIR_SOURCES = ("rated", "on_policy")


@dataclass
class DataConfig:
    """Base of the ``data`` group: format, batching and the data seed."""

    name: str = MISSING
    format: str = "sft"
    """``sft`` (prompt, completion), ``preference`` (prompt, chosen, rejected) or ``unpaired`` (prompt,
    completion, label: True for a desirable completion, False for an undesirable one; KTO's data,
    TRL's unpaired preference format). Pairs are unpaired on the fly (the built-in skills data, and
    a file with ``chosen`` / ``rejected`` and no ``label``): each pair becomes a desirable row (the
    chosen response) and an undesirable one (the rejected response)."""
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
    weight_column: Optional[str] = None
    """A numeric column holding each training example's weight (finite, ≥ 0): the batch loss becomes
    the weighted mean Σ w·ℓ / Σ w (Dr. DPO: the weighted expectation, see ``objective/aggregator``),
    with any objective, SFT included. Evaluation metrics stay unweighted means. null: every example
    weighs 1."""
    chat_template: str = "messages"
    """When to render prompts with the tokenizer's chat template (TRL's and LLaMA-Factory's
    conversation format; the loss stays on the reply): ``messages`` (conversation data only, as TRL
    does), ``always`` (plain prompt rows too, as one user turn: for instruct models), ``never``. A
    tokenizer without a template (``tiny_llama``) uses the plain ``role: content`` lines instead."""
    pairs: str = "rated"
    """Where the training split's preference pairs come from: ``rated`` (the data's own pairs; for
    ``data=skills`` its rated responses, ``pair_kinds`` / ``rating_gaps``) or ``on_policy``: for every
    training prompt, samples of the model the run starts from (``model.init_from``, the SFT model of a
    DPO run), the higher ground-truth reward chosen (assay.models.onpolicy). Needs a reward: skills only.
    Val and test keep the data's own (clean, exact-vs-near) pairs."""
    pair_samples: int = 4
    """On-policy pairs: responses sampled per prompt (≥ 2). The pair is the first sample and the first
    later one whose reward differs; a prompt whose samples all tie is dropped."""
    pair_temperature: float = 1.0
    """On-policy pairs: sampling temperature (> 0; no top-k / top-p cut)."""
    pair_seed: int = 0
    """On-policy pairs: the sampling seed. Fixed, not the run's seed, so every arm and seed of a study
    trains on the same pairs (the cache keys on it, the model's weights and the prompts)."""
    seed: int = II("seed")

    rewarded: ClassVar[bool] = False
    """Whether the rows carry what the ground-truth reward needs (``answer``): on-policy pairs need it."""

    def __post_init__(self) -> None:
        check(self.pairs in PAIR_SOURCES, "data.pairs", self.pairs, f"must be one of {list(PAIR_SOURCES)}")
        if self.pairs == "on_policy":
            check(type(self).rewarded, "data.pairs", self.pairs, f"ranks samples by the skills tasks' ground-truth reward; data={self.name} has none (use data=skills)")
            check(self.format == "preference", "data.pairs", self.pairs, "builds preference pairs: set data.format=preference")
            check(self.pair_samples >= 2, "data.pair_samples", self.pair_samples, "must be at least 2 (a pair needs two samples)")
            check(self.pair_temperature > 0, "data.pair_temperature", self.pair_temperature, "must be > 0")
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

    def check_files(self) -> None:
        """Check the contents of the local files this config reads (rows, types), without loading
        them into a dataset: the preflight calls it for every job before the first one starts.
        Sources without local files have nothing to check."""

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

    rewarded: ClassVar[bool] = True

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
            check(self.format in ("preference", "unpaired"), "data.pair_kinds", list(self.pair_kinds), "needs data.format=preference or unpaired")
            check(self.rating_gaps is None, "data.pair_kinds", list(self.pair_kinds), "draws one pair per prompt; data.rating_gaps (Curry-DPO) makes its own pairs: set one of them")
        if self.pairs == "on_policy":
            check(list(self.pair_kinds) == ["exact_vs_near"] and self.rating_gaps is None, "data.pairs", self.pairs,
                  "samples the training pairs from the model; data.pair_kinds and data.rating_gaps choose rated pairs: set one of them")
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
                if self.format == "sft":  # (unpaired: the pairs below, then unpaired)
                    r["completion"] = r["answer"]
                else:  # rejected = the near miss, a plausible wrong answer
                    r["chosen"], r["rejected"] = r["responses"][0], r["responses"][1]
            if split == "train" and self.format == "preference" and self.rating_gaps is not None:
                rows = rating_gap_pairs(rows, list(self.rating_gaps))
            if split == "train" and self.format != "sft" and list(self.pair_kinds) != ["exact_vs_near"]:
                rows = graded_pairs(rows, list(self.pair_kinds), self.seed)
            if self.format == "preference":
                rows = [with_rewards(r) for r in rows]
            if self.format == "unpaired":
                rows = unpaired_rows(rows)
            out[split] = datasets.Dataset.from_list(rows)
        return datasets.DatasetDict(out)


def unpaired_rows(pairs: list[dict]) -> list[dict]:
    """Each pair as two unpaired rows (KTO's data): ``<id>/desirable`` with the chosen response as its
    completion (label True), then ``<id>/undesirable`` with the rejected one (label False)."""
    out = []
    for r in pairs:
        base = {k: v for k, v in r.items() if k not in ("chosen", "rejected")}
        out.append({**base, "id": f"{r['id']}/desirable", "completion": r["chosen"], "label": True})
        out.append({**base, "id": f"{r['id']}/undesirable", "completion": r["rejected"], "label": False})
    return out


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
