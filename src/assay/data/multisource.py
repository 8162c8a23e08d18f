"""Several data sources in one run (``data=sources``): one pool, one domain per source.

    assay-train data=sources \
      +data.sources.code='{kind:jsonl,train_file:code.jsonl,columns:{prompt:q,completion:a}}' \
      +data.sources.chat='{kind:hub,path:tatsu-lab/alpaca,schema:alpaca}' \
      data.sources.code.weight=2

Each entry of ``data.sources`` is keyed by its domain name and holds ``kind`` (``skills``, ``hub``,
``jsonl`` or ``parquet``: today's loaders), an optional relative ``weight`` and every field that
loader takes (schema, column map, files, splits, ...). The run's ``data.format`` applies to every
source. Ids become ``<domain>/<the source's own id>``: unique across sources (domain names hold no
``/``), and unchanged when another source is added or removed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from assay.lazy import datasets
from omegaconf import MISSING, DictConfig, OmegaConf

from assay.data.sources import SPLITS, DataConfig, SkillsData
from assay.data.tables import HubPreferenceData, HubSFTData, JsonlData, ParquetData
from assay.errors import UserError, check
from assay.registry import register

CORE = ("id", "source", "difficulty", "answer")
SOURCE_KEYS = ("kind", "weight")
"""Keys of a source entry that are not fields of its loader."""


def _loader(kind: str, data_format: str) -> type:
    kinds = {"skills": SkillsData, "hub": HubSFTData if data_format == "sft" else HubPreferenceData, "jsonl": JsonlData, "parquet": ParquetData}
    return kinds[kind]


KINDS = ("skills", "hub", "jsonl", "parquet")
INHERITED = ("format", "seed", "separator", "max_length", "batch_size", "eval_batch_size")
"""Run-level fields every source takes from ``data`` (a source may not set them)."""


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


@register("data", "sources")
@dataclass
class SourcesData(DataConfig):
    """Several sources (skills, Hub, JSON-lines, Parquet) in one pool, keyed by domain name; each
    ``{kind: skills|hub|jsonl|parquet, weight, <loader fields>}``, e.g. ``data=sources
    +data.sources.code='{kind:jsonl,train_file:code.jsonl}' +data.sources.skills='{kind:skills}'``."""

    name: str = "sources"
    sources: dict[str, Any] = field(default_factory=dict)
    """Domain name -> {kind, weight, <the loader's fields>}, e.g.
    ``{code: {kind: jsonl, train_file: code.jsonl, weight: 2}, skills: {kind: skills}}``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sources = {str(k): _plain(v) for k, v in _plain(self.sources).items()}
        check(len(self.sources) > 0, "data.sources", {}, "name at least one source: data.sources.<domain>={kind: ..., ...}")
        self.loaders()  # every entry is checked before anything is loaded

    def domain_names(self) -> list[str]:
        return list(self.sources)

    def domain_weights(self) -> dict[str, float]:
        return {d: float(e.get("weight", 1.0)) for d, e in self.sources.items()}

    def loaders(self) -> dict[str, DataConfig]:
        """Each source's own loader config, with the run-level fields filled in."""
        out = {}
        for domain, entry in self.sources.items():
            where = f"data.sources.{domain}"
            check("/" not in domain and domain.strip() == domain and domain != "", where, domain, "a domain name must be non-empty and hold no '/' or surrounding spaces (ids are <domain>/<id>)")
            if not isinstance(entry, dict):
                raise UserError(where, entry, f"must be a mapping with a kind (one of {list(KINDS)}) and that loader's fields")
            kind = entry.get("kind")
            check(kind in KINDS, f"{where}.kind", kind, f"must be one of {list(KINDS)}")
            weight = entry.get("weight", 1.0)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
                raise UserError(f"{where}.weight", weight, "must be a finite number >= 0")
            cls = _loader(kind, self.format)
            fields = {f.name for f in dataclasses.fields(cls) if f.init}
            given = {k: v for k, v in entry.items() if k not in SOURCE_KEYS}
            if "format" in given and given["format"] != self.format:
                raise UserError(f"{where}.format", given["format"], f"every source shares the run's format data.format={self.format}")
            for key in given:
                if key in ("source_name", "source_column"):
                    raise UserError(f"{where}.{key}", given[key], "a source's domain is its key in data.sources (one domain per source)")
                if key in INHERITED and key != "format":
                    raise UserError(f"{where}.{key}", given[key], f"is a run-level field; set data.{key} instead")
                if key not in fields or key == "name":
                    allowed = sorted(fields - set(INHERITED) - {"name"}) + list(SOURCE_KEYS)
                    raise UserError(f"{where}.{key}", given[key], f"unknown key for a {kind} source; allowed: {sorted(allowed)}")
            given.update({k: getattr(self, k) for k in INHERITED})
            if kind in ("jsonl", "parquet", "hub"):
                given["source_name"] = domain
            try:
                loader = cls(**given)
            except UserError as e:
                raise _named(e, domain) from None
            missing = [f.name for f in dataclasses.fields(cls) if getattr(loader, f.name) == MISSING]
            if missing:
                raise UserError(f"{where}.{missing[0]}", None, f"is required for a {kind} source")
            out[domain] = loader
        return out

    def check_files(self) -> None:
        for domain, loader in self.loaders().items():
            try:
                loader.check_files()
            except UserError as e:
                raise _named(e, domain) from None

    def load(self) -> datasets.DatasetDict:
        parts: dict[str, list[datasets.Dataset]] = {s: [] for s in SPLITS}
        for domain, loader in self.loaders().items():
            try:
                splits = loader.capped(loader.load())
            except UserError as e:
                raise _named(e, domain) from None
            except Exception as e:  # noqa: BLE001 - a loader's own failure, named by its source
                raise UserError(f"data.sources.{domain}", self.sources[domain].get("kind"), f"could not be loaded ({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
            for split in SPLITS:
                if split not in splits or len(splits[split]) == 0:
                    raise UserError(f"data.sources.{domain}", self.sources[domain].get("kind"), f"has no {split} examples")
                parts[split].append(_as_domain(splits[split], domain))
        out = {}
        for split, dss in parts.items():
            dss = [_plain_strings(d) for d in dss]
            common = [c for c in dss[0].column_names if all(c in d.column_names and d.features[c] == dss[0].features[c] for d in dss[1:])]
            keep = list(dict.fromkeys([*CORE, *self.text_columns, *common]))
            out[split] = datasets.concatenate_datasets([d.select_columns(keep) for d in dss])
        return datasets.DatasetDict(out)


def _as_domain(ds: datasets.Dataset, domain: str) -> datasets.Dataset:
    """Every row's ``source`` becomes the domain; its id ``<domain>/<id>`` unless it already starts
    that way (a tabular file without ids numbers its rows ``<domain>/<split>/<index>`` itself)."""
    prefix = f"{domain}/"
    ids = [i if str(i).startswith(prefix) else prefix + str(i) for i in ds["id"]]
    ds = ds.remove_columns([c for c in ("id", "source") if c in ds.column_names])
    ds = ds.add_column("id", ids).add_column("source", [domain] * len(ids))
    if "difficulty" in ds.column_names and ds.features["difficulty"].dtype != "int64":
        ds = ds.cast_column("difficulty", datasets.Value("int64"))
    return ds


def _plain_strings(ds: datasets.Dataset) -> datasets.Dataset:
    """``large_string`` (Parquet, some JSON) and ``string`` columns cannot be concatenated: one type."""
    features = ds.features.copy()
    changed = False
    for name, feature in features.items():
        if isinstance(feature, datasets.Value) and feature.dtype == "large_string":
            features[name], changed = datasets.Value("string"), True
    return ds.cast(features) if changed else ds


def _named(error: UserError, domain: str) -> UserError:
    """A loader's error, with its ``data.<field>`` renamed to the source's own ``data.sources.<d>.<field>``."""
    name = error.field
    if name.startswith("data."):
        name = f"data.sources.{domain}." + name[len("data."):]
    elif name == "data":
        name = f"data.sources.{domain}"
    else:
        name = f"data.sources.{domain}: {name}"
    return UserError(name, error.value, error.allowed)


def check_duplicate_domains(overrides: list[str]) -> None:
    """Two command-line entries for one domain (``+data.sources.a=... +data.sources.a=...``) would be
    merged by Hydra, the last silently winning: refuse them instead."""
    seen: dict[str, str] = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        parts = key.split(".")
        if len(parts) == 3 and parts[:2] == ["data", "sources"]:
            if parts[2] in seen:
                raise UserError(key, value, f"two sources with the same domain name {parts[2]!r} (also {seen[parts[2]]}); each domain names one source")
            seen[parts[2]] = value
