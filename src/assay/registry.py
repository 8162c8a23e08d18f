"""One registry per concern.

A registry entry is a dataclass: typed fields with docstrings (the schema Hydra validates overrides
against) plus the methods that build or apply the component. Registering stores the option ``<key>``
(the dataclass defaults) and the schema ``<key>_schema`` in Hydra's ConfigStore. An option whose
values differ from the dataclass defaults has a ``conf/<group>/<key>.yaml`` that selects
``<key>_schema`` in its defaults list and holds only what differs; that file is then the option.

    @register("objective", "dpo")
    @dataclass
    class DPO(ObjectiveConfig):
        "Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290)."
        beta: float = 0.1

The ``name`` field of each entry defaults to its key, so a composed config always says which entry
built it, and ``OmegaConf.to_object`` returns an instance of the right class without any lookup.

A field that moved elsewhere is named in the class's ``moved_keys`` ClassVar (former field name ->
where it lives now, see ``assay.errors.MOVED_KEYS_ATTRIBUTE``): the error for the old spelling points
there. It is part of the class, like its fields, and nothing fills it in at import time.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from typing import Any, Callable, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from assay.errors import MOVED_KEYS_ATTRIBUTE, SCHEMA_SUFFIX, UserError, public_options
from assay.paths import CONF_DIR

T = TypeVar("T")

_REGISTRY: dict[str, dict[str, type]] = {}

GROUPS = ("model", "data", "mixture", "noise", "selection", "ordering", "batch_selection", "objective", "dynamics", "trainer", "logger")
"""The config groups backed by a registry (the research axes plus trainer and logger)."""


def register(group: str, key: str) -> Callable[[type[T]], type[T]]:
    """Register dataclass ``cls`` as option ``key`` of config group ``group``."""

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass to be registered")
        names = {f.name: f for f in dataclasses.fields(cls)}
        if "name" not in names or names["name"].default != key:
            raise TypeError(f"{cls.__name__}.name must default to the registry key {key!r}")
        still_there = sorted(set(getattr(cls, MOVED_KEYS_ATTRIBUTE, None) or {}) & set(names))
        if still_there:
            raise TypeError(f"{cls.__name__}.{MOVED_KEYS_ATTRIBUTE} names fields it still has: {still_there}")
        entries = _REGISTRY.setdefault(group, {})
        if key in entries and entries[key] is not cls:
            raise TypeError(f"{group}/{key} is registered twice ({entries[key].__name__}, {cls.__name__})")
        entries[key] = cls
        store = ConfigStore.instance()
        store.store(group=group, name=f"{key}_schema", node=_schema_node(cls))
        # The option itself, with the dataclass defaults: ``group=key`` composes without a YAML file.
        # Where ``conf/<group>/<key>.yaml`` exists (it extends ``<key>_schema`` with what differs) the
        # file is the option: the config directory precedes the ConfigStore in Hydra's search path,
        # and storing the same name as well would make Hydra merge the two (a deprecated behaviour).
        if not (CONF_DIR / group / f"{key}.yaml").is_file():
            store.store(group=group, name=key, node=_schema_node(cls))
        return cls

    return wrap


def _schema_node(cls: type) -> DictConfig:
    """The typed schema, with free-form maps (``dict[str, X]`` fields such as mixture weights)
    open to new keys, so ``mixture.weights={wiki:1,code:3}`` works on the command line."""
    node = OmegaConf.structured(cls)
    for f in dataclasses.fields(cls):
        if typing.get_origin(f.type) is dict or f.type is dict or str(f.type).startswith("dict["):
            OmegaConf.set_struct(node[f.name], False)
    return node


def discover(*packages: str) -> None:
    """Import every module of ``packages`` (and their sub-packages) that registers an entry. Modules
    that register nothing (training machinery) are left to be imported when a run needs them, so
    composing and validating a config stays quick (see ``assay.lazy``)."""
    for name in packages:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=f"{name}."):
            if info.ispkg or _registers(info):
                importlib.import_module(info.name)


def _registers(info: pkgutil.ModuleInfo) -> bool:
    spec = info.module_finder.find_spec(info.name)  # type: ignore[call-arg]
    origin = getattr(spec, "origin", None)
    if not origin or not origin.endswith(".py"):
        return True  # not a source file: import it to find out
    with open(origin, encoding="utf-8") as f:
        return "@register(" in f.read()


def options(group: str) -> dict[str, type]:
    """The registered entries of ``group``, by key."""
    return dict(_REGISTRY.get(group, {}))


def check_choices(choices: dict) -> None:
    """Refuse a group choice that names an internal schema (``objective=dpo_schema`` would compose the
    bare dataclass defaults, silently skipping what the option's YAML sets)."""
    for group, choice in choices.items():
        if isinstance(choice, str) and choice.endswith(SCHEMA_SUFFIX):
            known = public_options(set(yaml_options(group)) | set(options(group)))
            raise UserError(group, choice, f"unknown option; choose one of {known}")


def yaml_options(group: str) -> list[str]:
    """The options of ``group`` that have a YAML file in ``conf/<group>/``."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def lookup(group: str, key: str) -> type:
    entries = _REGISTRY.get(group, {})
    if key not in entries:
        raise UserError(group, key, f"must be one of {sorted(entries)}")
    return entries[key]


def describe(cls: type) -> str:
    """First line of the entry's docstring: what ``assay-list`` shows."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def to_object(node: Any) -> Any:
    """Turn a composed, typed config node into its dataclass instance (running its validation)."""
    if dataclasses.is_dataclass(node):
        return node
    return OmegaConf.to_object(node)


def from_saved(group: str, node: Any) -> Any:
    """The typed entry of ``group`` from a run's saved ``config.yaml`` node: the entry named by its
    ``name``, with every nested entry (``objective.aggregator``, ``selection.selector``: a mapping with
    a ``name`` of the group ``<group>/<field>``) typed the same way, so a saved run rebuilds exactly
    what it ran with."""
    nested = {key for key in node if f"{group}/{key}" in _REGISTRY and isinstance(node[key], DictConfig) and "name" in node[key]}
    typed = OmegaConf.merge(OmegaConf.structured(lookup(group, node["name"])), {k: node[k] for k in node if k not in nested})
    for key in nested:
        typed[key] = OmegaConf.merge(OmegaConf.structured(lookup(f"{group}/{key}", node[key]["name"])), node[key])
    return OmegaConf.to_object(typed)

