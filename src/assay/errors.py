"""User-facing errors: one line that names the field, the value and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any


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


def explain(exc: BaseException) -> str:
    """One line for a composition or validation failure, naming field, value and what is allowed."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MissingConfigException):
        missing = exc.missing_cfg_file or ""
        if "/" in missing and exc.options is not None:
            group, value = missing.rsplit("/", 1)
            return str(UserError(group, value, f"unknown option; choose one of {sorted(exc.options)}"))
        return str(exc).strip().splitlines()[0]
    if isinstance(exc, OverrideParseException):
        return f"bad override: {str(exc).strip().splitlines()[0]}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        exc = cause
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        key = getattr(exc, "full_key", None) or "?"
        owner = getattr(exc, "object_type", None)
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
