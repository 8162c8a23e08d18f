"""Before any job starts: every local file a job's data reads exists, is a readable, non-empty file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from assay.errors import UserError


def check_data_files(spec: Any) -> None:
    """Every local file the job's data reads (``data.train_file``, ``data.data_files.<split>``, ...)
    exists, is a readable, non-empty file: a sweep with one bad path stops before any job starts,
    instead of when that job's turn comes."""

    def files(node: Any, prefix: str):
        for f in dataclasses.fields(node) if dataclasses.is_dataclass(node) else []:
            value = getattr(node, f.name)
            key = f"{prefix}.{f.name}"
            if f.name.endswith("_file") and isinstance(value, str) and value:
                yield key, Path(value).expanduser(), value
            elif f.name.endswith("_files") and isinstance(value, dict):
                # Builder data files may also be URLs or glob patterns: only plain local paths are checked,
                # relative to a local dataset folder (``data.path``) when there is one.
                base = Path(str(getattr(node, "path", "") or ".")).expanduser()
                base = base if base.is_dir() else Path(".")
                yield from ((f"{key}.{k}", base / Path(v).expanduser(), v) for k, v in value.items() if isinstance(v, str) and "://" not in v and not any(c in v for c in "*?["))
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    yield from files(item, f"{key}[{i}]")
            elif dataclasses.is_dataclass(value):
                yield from files(value, key)

    for key, path, value in files(spec.data, "data"):
        if not path.exists():
            raise UserError(key, value, "file does not exist")
        if not path.is_file():
            raise UserError(key, value, "is a directory, not a file" if path.is_dir() else "is not a regular file")
        if not os.access(path, os.R_OK):
            raise UserError(key, value, "file is not readable")
        if path.stat().st_size == 0:
            raise UserError(key, value, "file is empty")
