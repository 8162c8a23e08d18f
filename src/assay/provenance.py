"""Where a number came from: the code, the libraries, the machine and the command of a run.

Every ``summary.json`` carries a ``provenance`` block, and the wandb run config the same keys
(``provenance.code.commit``, ...), so any table built from runs can name the commit it came from and
refuse to pool runs of different code. A run from a tree with uncommitted changes records that the
tree was dirty, a hash of the diff, and the diff itself (``code.diff`` in the run directory): the
commit alone would not say which code ran. A run from an installed package outside a git checkout
says so instead of naming a commit.

The code state is read once per process, when the first run starts: an in-process sweep runs every
job with the code that was imported then, whatever happens to the files on disk afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("torch", "transformers", "pytorch-lightning", "peft", "datasets", "trl", "flwr")
"""Libraries whose versions change results; those not installed are left out."""
DIFF_FILE = "code.diff"
RECORD_FILE = "provenance.json"
"""Written when a run starts (summary.json, written when it ends, carries the same record)."""
CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root when assay runs from a checkout (src/assay/provenance.py)."""


def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_state() -> tuple[dict[str, Any], str]:
    """(the code record, the diff text when the tree is dirty else ""). Untracked files are part of
    the state too: they are listed in the diff with a hash of their content."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != CHECKOUT or _git("ls-files", "--error-unmatch", "src/assay/__init__.py") is None:
        return {"commit": None, "dirty": None, "note": f"not a git checkout (assay {_version('assay')} installed at {CHECKOUT})"}, ""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    diff = _git("diff", "HEAD", "--binary") or ""
    untracked = [f for f in (_git("ls-files", "--others", "--exclude-standard", "-z") or "").split("\0") if f]
    if untracked:
        lines = []
        for name in sorted(untracked):
            try:
                digest = hashlib.sha256((CHECKOUT / name).read_bytes()).hexdigest()
            except OSError:
                digest = "unreadable"
            lines.append(f"#   {name} sha256={digest}")
        diff += "# untracked files:\n" + "\n".join(lines) + "\n"
    record: dict[str, Any] = {"commit": commit, "dirty": bool(diff)}
    if diff:
        record["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
        record["diff_file"] = DIFF_FILE
    return record, diff


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    found = {"assay": _version("assay"), "python": platform.python_version(), **{p: _version(p) for p in packages}}
    return {k: v for k, v in found.items() if v is not None}


def machine(world_size: int = 1) -> dict[str, Any]:
    gpus: list[str] = []
    torch = sys.modules.get("torch")  # only asked of a process that already uses torch
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gpus": gpus, "world_size": int(world_size)}


def collect(run_dir: Optional[Path] = None, world_size: int = 1, data_order_fingerprint: Optional[str] = None) -> dict[str, Any]:
    """The provenance record of a run. With ``run_dir``, a dirty tree's diff is written there."""
    code, diff = code_state()
    if run_dir is not None and diff:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / DIFF_FILE).write_text(diff)
    record = {
        "code": dict(code),
        "versions": versions(),
        "machine": machine(world_size),
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if data_order_fingerprint is not None:
        record["data_order_fingerprint"] = data_order_fingerprint
    return record


def commit_label(record: Optional[dict[str, Any]]) -> str:
    """A short name for a run's code: the commit's first 10 digits, ``+dirty:<diff hash>`` when the
    tree had changes (two dirty runs of one commit are the same code only with the same diff), or
    ``unknown`` (a run written before provenance was recorded, or outside a checkout)."""
    code = (record or {}).get("code") or {}
    commit = code.get("commit")
    if not commit:
        return "unknown"
    return commit[:10] + (f"+dirty:{str(code.get('diff_sha256', ''))[:8]}" if code.get("dirty") else "")


def current_label() -> str:
    """:func:`commit_label` of the code this process runs."""
    return commit_label({"code": code_state()[0]})
