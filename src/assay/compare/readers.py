"""Reading runs for ``assay-compare``: local run directories and Hydra sweeps, wandb offline run
directories (their ``.wandb`` record files), and runs on the wandb server.

A run without a summary (failed, killed, still running) or a sweep job that never produced a
directory is returned with its status, never dropped, because a seed that crashed is part of the
result.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from assay.errors import UserError
from assay.provenance import commit_label
from assay.registry import GROUPS
from assay.run.results import flatten

CURVES = ("train/loss", "val/loss")
"""The learning curves drawn by default (and fetched from the wandb server)."""
WANDB_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")


@dataclass
class Run:
    name: str
    source: str
    """local | wandb-offline | wandb"""
    status: str
    """completed | failed (no summary) | missing (a sweep job without a directory); for SLURM sweep jobs
    without a result: running (queued or running) | cancelled | failed"""
    config: dict[str, Any]
    """Flat, dotted keys (objective.name, noise.p, seed)."""
    metrics: dict[str, float] = field(default_factory=dict)
    history: pd.DataFrame | None = None
    reason: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    """The run's ``provenance`` record (assay.provenance): commit, versions, machine, command."""

    @property
    def commit(self) -> str:
        return commit_label(self.provenance)


def split_provenance(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A flat wandb config -> (the run's own config, its provenance record as a nested mapping): the
    provenance keys are facts about the run, not settings to group on."""
    own, origin = {}, {}
    for key, value in config.items():
        if key.startswith("provenance."):
            node = origin
            *parents, leaf = key.split(".")[1:]
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        else:
            own[key] = value
    return own, origin


def _read_mapping(path: Path, kind: str) -> dict:
    """A run's config (YAML) or summary (JSON) as a dict; a half-written file is one clear error."""
    import yaml

    parse, bad = (json.loads, json.JSONDecodeError) if kind == "JSON" else (yaml.safe_load, yaml.YAMLError)
    try:
        data = parse(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError("run", str(path.parent), f"cannot read {path.name} ({type(e).__name__})") from None
    except bad:
        raise UserError("run", str(path.parent), f"{path.name} is half-written or not {kind}; rerun or remove that run") from None
    if not isinstance(data, dict):
        raise UserError("run", str(path.parent), f"{path.name} is empty or half-written; rerun or remove that run")
    return data


def _read_yaml(path: Path) -> dict:
    return _read_mapping(path, "YAML")


def _read_json(path: Path) -> dict:
    return _read_mapping(path, "JSON")


def _numeric(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / ".hydra" / "config.yaml").is_file() or (path / "summary.json").is_file()


def is_wandb_run_dir(path: Path) -> bool:
    return path.name.startswith(("offline-run-", "run-")) and (path / "files").is_dir()


def read_local_run(path: Path) -> Run:
    """One assay run directory: config.yaml (or Hydra's copy), summary.json, metrics.csv."""
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError("run", str(path), "directory is not readable")
    cfg_file = path / "config.yaml" if (path / "config.yaml").is_file() else path / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise UserError("run", str(path), "not a run directory: no config.yaml or .hydra/config.yaml")
    config = flatten({k: v for k, v in _read_yaml(cfg_file).items() if k != "hydra"})
    history = None
    if (path / "metrics.csv").is_file():
        try:
            history = pd.read_csv(path / "metrics.csv")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            history = None  # a run killed mid-write: the curve is lost, the summary still counts
    if not (path / "summary.json").is_file():
        failure = path / "failure.json"  # written by a run that stopped with an error (assay.run.dirs)
        reason = "no summary.json (killed or still running)"
        if failure.is_file():
            try:
                reason = str(json.loads(failure.read_text()).get("error") or reason)
            except ValueError:
                pass
        return Run(str(path), "local", "failed", config, history=history, reason=reason)
    summary = _read_json(path / "summary.json")
    if "metrics" not in summary or not isinstance(summary["metrics"], dict):
        raise UserError("run", str(path), "summary.json has no 'metrics' object; rerun or remove that run")
    status = summary.get("status", "completed")
    return Run(str(path), "local", status, config, _numeric(summary["metrics"]), history, provenance=summary.get("provenance") or {})


def read_wandb_offline(path: Path) -> Run:
    """A wandb run directory (offline-run-* or run-*): config, per-step history, final summary and
    exit code from the run's .wandb record file (what `wandb sync` uploads); files/config.yaml and
    files/wandb-summary.json where wandb wrote them."""
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history, exit_code = None, None
    records = sorted(path.glob("*.wandb"))
    if records:
        config, summary, history, exit_code = _read_wandb_records(records[0])
    if (path / "files" / "config.yaml").is_file():
        for k, v in _read_yaml(path / "files" / "config.yaml").items():
            if not str(k).startswith("_wandb"):
                config.update(flatten({k: v["value"] if isinstance(v, dict) and "value" in v else v}))
    if (path / "files" / "wandb-summary.json").is_file():
        summary.update(_read_json(path / "files" / "wandb-summary.json"))
    if not config and not summary:
        raise UserError("run", str(path), "wandb run directory without a readable .wandb record file, config or summary")
    config, origin = split_provenance({k: v for k, v in config.items() if not k.startswith(("_wandb", "summary/"))})
    metrics = {k: v for k, v in _numeric(summary).items() if not k.startswith("_")}
    done = (summary.get("status") == "completed" or any(k.startswith("test/") for k in metrics)) and exit_code in (None, 0)
    reason = "" if done else f"no final summary (exit code {exit_code}; failed, killed or still running)"
    return Run(str(path), "wandb-offline", "completed" if done else "failed", config, metrics if done else {}, history, reason, origin)


def _wandb_log_records(file: Path) -> Iterable[bytes]:
    """The records of a .wandb file: a LevelDB-style log (7-byte file header ':W&B' + magic + version,
    then 32 KiB blocks of chunks, each with a 7-byte header: crc32, length, type full/first/middle/last)."""
    import struct

    data = file.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError("not a wandb record file")
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield buf + chunk
            buf = b""


def _read_wandb_records(file: Path) -> tuple[dict, dict, pd.DataFrame | None, int | None]:
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    rows: list[dict] = []
    exit_code = None

    def items(updates):
        for item in updates:
            key = item.key or "/".join(item.nested_key)
            try:
                yield key, json.loads(item.value_json)
            except ValueError:
                continue

    try:
        from wandb.proto import wandb_internal_pb2

        for data in _wandb_log_records(file):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                for k, v in items(rec.run.config.update):
                    config.update(flatten({k: v}))
            elif kind == "config":
                for k, v in items(rec.config.update):
                    config.update(flatten({k: v}))
            elif kind == "summary":
                summary.update(dict(items(rec.summary.update)))
            elif kind == "history":
                rows.append(dict(items(rec.history.item)))
            elif kind == "exit":
                exit_code = rec.exit.exit_code
    except Exception:  # a record file cut off by a kill: keep what was read
        pass
    history = pd.DataFrame(rows) if rows else None
    if history is not None:
        step = "trainer/global_step" if "trainer/global_step" in history else "_step" if "_step" in history else None
        if step:
            history["step"] = history[step]
    return config, summary, history, exit_code


def read_wandb_api(project: str) -> list[Run]:
    if not WANDB_PATH.match(project):
        raise UserError("wandb project", project, "expected 'project' or 'entity/project' (letters, digits, - _ .)")
    from assay.loggers import has_wandb_credentials

    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun") or not has_wandb_credentials():
        raise UserError(
            "wandb project", project,
            "reading from the wandb server needs a login (WANDB_API_KEY or `wandb login`) and WANDB_MODE online; "
            "for offline runs pass their run directories instead",
        )
    import wandb

    try:
        api = wandb.Api(timeout=30)
        runs = list(api.runs(project))
    except Exception as e:
        raise UserError("wandb project", project, f"cannot list its runs ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    out = []
    for r in runs:
        config = {}
        for k, v in dict(r.config).items():
            if not k.startswith("_"):
                config.update(flatten({k: v}))
        summary = _numeric(dict(r.summary._json_dict))
        metrics = {k: v for k, v in summary.items() if not k.startswith("_")}
        done = r.state == "finished"
        try:
            history = r.history(keys=list(CURVES), samples=500, pandas=True)
            if "trainer/global_step" in history:
                history["step"] = history["trainer/global_step"]
            elif "_step" in history:
                history["step"] = history["_step"]
        except Exception:
            history = None
        config, origin = split_provenance(config)
        out.append(Run(f"{project}/{r.id}", "wandb", "completed" if done else "failed", config, metrics if done else {}, history, "" if done else f"state {r.state}", origin))
    return out


def read_sweep(path: Path) -> list[Run]:
    """Every job of a Hydra multirun directory; jobs the sweep should have produced but did not are
    listed as missing (their overrides tell which combination is absent)."""
    job_dirs = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and is_run_dir(p)), key=_job_key)
    runs = [read_local_run(p) for p in job_dirs]
    for num, overrides in _expected_jobs(path).items():
        if not (path / str(num)).is_dir():
            config = {}
            for o in overrides:
                key, _, value = o.lstrip("+~").partition("=")
                # A group choice (objective=dpo) is the option's name in a run's config (objective.name).
                config[f"{key}.name" if "." not in key and "/" not in key and key in GROUPS else key] = _parse_scalar(value)
            runs.append(Run(str(path / str(num)), "local", "missing", config, reason="no job directory (never started, or lost)"))
    return _with_job_states(path, runs)


def _with_job_states(sweep: Path, runs: list[Run]) -> list[Run]:
    """A job without a result, as its scheduler saw it: ``running`` (queued or running), ``cancelled``
    or ``failed``, with the reason (SLURM sweeps, from the sweep's .submitit records and squeue)."""
    from assay.run.slurm import job_states

    states = job_states(sweep)
    for r in runs:
        num = Path(r.name).name
        if r.status != "completed" and num.isdigit() and int(num) in states:
            r.status, r.reason = states[int(num)]
    return runs


def _job_key(p: Path) -> tuple:
    return (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name)


def _parse_scalar(value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _expected_jobs(sweep: Path) -> dict[int, list[str]]:
    """job num -> overrides, from the sweep's multirun.yaml (grid sweeps only)."""
    file = sweep / "multirun.yaml"
    if not file.is_file():
        return {}
    try:
        hydra_cfg = _read_yaml(file).get("hydra", {})
        if "BasicSweeper" not in str(hydra_cfg.get("sweeper", {}).get("_target_", "")):
            return {}
        from assay.run.sweeps import expand, sweeper_params_overrides

        task = list(hydra_cfg.get("overrides", {}).get("task", []))
        params = hydra_cfg.get("sweeper", {}).get("params") or {}
        jobs = expand(sweeper_params_overrides(params) + task, True)
    except Exception:
        return {}
    return dict(enumerate(jobs))


def joined_attempts(attempts: list[Run]) -> Run:
    """The wandb runs of one assay run directory (``<run>/wandb``, named by start time) as one run:
    an interrupted attempt and the ``resume=`` that continued it from its checkpoint are one
    training run, so its outcome is the last attempt's and its curve the attempts' rows joined,
    each attempt's rows kept up to the step the next one restarted from (the rows a resumed
    attempt did again are its own, as in ``metrics.csv``)."""
    if len(attempts) == 1:
        return attempts[0]
    last = attempts[-1]
    parts, until = [], None
    for run in reversed(attempts):
        h = run.history
        if h is not None and "step" in h:
            h = h if until is None else h[h["step"] < until]
            if len(h):
                parts.append(h)
                until = float(h["step"].min()) if until is None else min(until, float(h["step"].min()))
    history = pd.concat(parts[::-1], ignore_index=True) if parts else last.history
    reason = last.reason or ""
    return Run(last.name, last.source, last.status, last.config, last.metrics, history,
               f"{reason}{'; ' if reason else ''}{len(attempts)} attempts (resumed)", last.provenance)


def collect(inputs: Iterable[str]) -> list[Run]:
    runs: list[Run] = []
    for arg in inputs:
        if arg.startswith("wandb:"):
            runs += read_wandb_api(arg[len("wandb:"):])
            continue
        path = Path(arg)
        if not path.exists():
            if WANDB_PATH.match(arg) and arg.count("/") <= 1 and not arg.startswith("."):
                runs += read_wandb_api(arg)
                continue
            raise UserError("runs", arg, "no such directory, and not a wandb project path ('entity/project' or wandb:entity/project)")
        if not path.is_dir():
            raise UserError("runs", arg, "expected a sweep directory, a run directory or a wandb run directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError("runs", arg, "directory is not readable")
        if is_wandb_run_dir(path):
            runs.append(read_wandb_offline(path))
        elif is_run_dir(path) and not (path / "multirun.yaml").is_file():
            runs.append(read_local_run(path))
        elif (path / "multirun.yaml").is_file() or any(p.is_dir() and is_run_dir(p) for p in path.iterdir()):
            runs += read_sweep(path)
        elif any(is_wandb_run_dir(p) for p in path.iterdir() if p.is_dir()):
            attempts = [read_wandb_offline(p) for p in sorted(path.iterdir()) if p.is_dir() and is_wandb_run_dir(p)]
            # <run>/wandb of one assay run: a resumed run logged each attempt as a wandb run of its own
            runs += [joined_attempts(attempts)] if is_run_dir(path.parent) else attempts
        else:
            found = sorted({p.parent for p in path.rglob("config.yaml") if p.parent.name != ".hydra" and is_run_dir(p.parent)})
            if not found:
                raise UserError("runs", arg, "no runs inside (no config.yaml, summary.json or wandb run directories)")
            runs += [read_local_run(p) for p in found]
    if not runs:
        raise UserError("runs", list(inputs), "no runs found")
    return runs
