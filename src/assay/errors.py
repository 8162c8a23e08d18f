"""User-facing errors: one line that names the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any


SCHEMA_SUFFIX = "_schema"
"""Registered schemas live in each group of the ConfigStore as ``<key>_schema`` (what the YAML
options extend); they are not options a user picks."""


MOVED_KEYS_ATTRIBUTE = "moved_keys"
"""A config class names its former fields and where each lives now in a class attribute of this name,

    moved_keys: ClassVar[dict[str, str]] = {"fraction": "selection.selector.fraction"}

so an old spelling gets a one-line pointer instead of a bare "unknown key". Nothing fills in a table
at import time: the declarations are read, when a key is refused, from the classes themselves."""


def moved_to(key: str, owner: Any) -> str | None:
    """Where the config key ``key`` (a full path such as ``selection.fraction``) lives now, as the
    class of the node that refused it (``owner``) declares, or else any schema of the config group the
    key's parent names (``mixture.probe`` under another mixture than the one that had the field,
    ``collab.mode`` with no ``collab`` chosen); None for a key that never moved."""
    field = key.rsplit(".", 1)[-1]
    for cls in [owner, *_group_schemas(key.rsplit(".", 1)[0] if "." in key else "")]:
        moved = getattr(cls, MOVED_KEYS_ATTRIBUTE, None) if isinstance(cls, type) else None
        if isinstance(moved, dict) and field in moved:
            return moved[field]
    return None


REMOVED_OPTIONS_ATTRIBUTE = "removed_options"
"""Like ``moved_keys``, for a whole option: a group's config classes name the options removed from the
group and the spelling that does what each did (``removed_options: ClassVar[dict[str, str]]``)."""


def removed_option(group: str, option: str) -> str | None:
    """The spelling that replaces ``group=option``, as the group's schemas declare; None if it never existed."""
    for cls in _group_schemas(group):
        removed = getattr(cls, REMOVED_OPTIONS_ATTRIBUTE, None)
        if isinstance(removed, dict) and option in removed:
            return removed[option]
    return None


def _group_schemas(parent: str) -> list[type]:
    """The classes behind the schemas (``<key>_schema``) that Hydra's ConfigStore holds for the config
    group at ``parent`` (``selection.selector`` -> group ``selection/selector``); none for a path that
    is no group. Read from the ConfigStore, which every registered schema is stored in."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    store, group = ConfigStore.instance(), parent.replace(".", "/")
    try:
        names = store.list(group) if group else []
    except OSError:
        return []
    classes = []
    for name in names:
        if name.removesuffix(".yaml").endswith(SCHEMA_SUFFIX):
            cls = OmegaConf.get_type(store.load(f"{group}/{name}").node)
            if isinstance(cls, type) and cls not in classes:
                classes.append(cls)
    return classes


def public_options(names) -> list[str]:
    """The options a user may choose among ``names``: every one but the internal schemas."""
    return sorted(n for n in names if not str(n).endswith(SCHEMA_SUFFIX))


class UserError(Exception):
    """A problem with what the user asked for (config, data, paths), not a bug in assay.

    The entry points print ``str(error)`` as a single line and exit with status 2, without a traceback.
    """

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r}: {allowed}")


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`UserError` unless ``condition`` holds."""
    if not condition:
        raise UserError(field, value, allowed)


def check_output_dir(path: Any, field: str) -> None:
    """The run (or sweep) directory can be created and written, else one line before anything
    starts: Hydra would otherwise fail creating it with a traceback (``/proc/x``, a path under a
    regular file, a read-only mount). Probes with a temporary directory it removes again."""
    import os
    import tempfile
    from pathlib import Path

    target = Path(str(path)).expanduser().absolute()
    ancestor = target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(field, str(path), f"cannot be created: {ancestor} is a file, not a directory; set paths.log_dir or {field} to a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".assay-probe-", dir=ancestor))
    except OSError as e:
        raise UserError(field, str(path), f"cannot be created in {ancestor} ({e.strerror or type(e).__name__}); set paths.log_dir or {field} to a writable directory") from None


OUT_OF_SPACE = ("ENOSPC", "EDQUOT")


def environment_problem(exc: BaseException) -> str | None:
    """One line for a failure of the machine rather than of assay or the config (disk full, quota
    exceeded), looked for along the exception's causes; None for anything else (a bug keeps its
    traceback)."""
    import errno
    import os

    codes = {getattr(errno, name) for name in OUT_OF_SPACE if hasattr(errno, name)}
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in codes:
            what = f"writing {exc.filename!r}" if exc.filename else "writing the run directory"
            reason = exc.strerror or os.strerror(exc.errno)
            return f"disk full {what} ({reason}); the run stopped without a summary.json: free space, or set paths.log_dir to a disk with room, and run it again"
        exc = exc.__cause__ or exc.__context__
    return None


def explain(exc: BaseException) -> str:
    """One line for a composition or validation failure, naming field, value and what is allowed."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MissingConfigException):
        missing = exc.missing_cfg_file or ""
        instead = removed_option(*missing.rsplit("/", 1)) if "/" in missing else None
        if instead is not None:
            group, value = missing.rsplit("/", 1)
            return str(UserError(group, value, f"was removed; use {instead}"))
        if "/" in missing and exc.options is not None:
            group, value = missing.rsplit("/", 1)
            return str(UserError(group, value, f"unknown option; choose one of {public_options(exc.options)}"))
        return str(exc).strip().splitlines()[0]
    if isinstance(exc, OverrideParseException):
        return f"bad override: {str(exc).strip().splitlines()[0]}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        exc = cause
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        key = getattr(exc, "full_key", None) or "?"
        owner = getattr(exc, "object_type", None)
        moved = moved_to(key, owner)
        if moved is not None:
            return f"{key}: unknown key; it moved to {moved}"
        if dataclasses.is_dataclass(owner):
            valid = sorted(f.name for f in dataclasses.fields(owner) if not f.name.startswith("_"))
            return f"{key}: unknown key; {owner.__name__} has {valid}"
        return f"{key}: unknown key ({_first_line(exc)}); `assay-train --cfg job` lists the keys"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None) or "?"
        return f"{key}: {_first_line(exc)}"
    if isinstance(exc, ConfigCompositionException):
        return _first_line(exc)
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def argument_parser(**kwargs: Any):
    """``argparse.ArgumentParser`` whose usage errors are one ``error:`` line (exit 2), like every other
    error of the commands, instead of argparse's usage block."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    return OneLineParser(**kwargs)
