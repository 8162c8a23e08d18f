"""``assay-study run``: every (arm, seed) of a study through Hydra multirun, with any launcher.

Each cell (an arm at one level of the crossed factors) is one multirun over the seeds it still
needs, in ``<study>/runs/<cell>/seed<k>``; setup runs come first, in ``<study>/setup/<name>``. A run
is done when its ``summary.json`` says completed *at the commit this process runs*; a relaunch
skips those. A run that was killed is resumed from its last checkpoint (``ckpt_path=last``) when it
started at the same commit, and moved aside to ``<study>/superseded/`` (never overwritten) when it
started at another. Completed runs of another commit are refused unless ``--allow-mixed-commits``:
a table pooled over code versions answers no question.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from assay import provenance
from assay.errors import UserError
from assay.study.spec import Cell, StudySpec, hydra_value


@dataclass
class RunState:
    cell: Optional[Cell]
    """None for a setup run."""
    seed: Optional[int]
    dir: Path
    status: str
    """completed | other-commit (completed by other code) | incomplete (started, no summary) | missing"""
    commit: str = ""

    @property
    def label(self) -> str:
        return f"{self.cell.name} seed {self.seed}" if self.cell else f"setup {self.dir.name}"


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_state(run_dir: Path, cell: Optional[Cell], seed: Optional[int], current: Optional[str]) -> RunState:
    """With ``current`` None, a completed run is completed whatever code produced it (a report)."""
    summary = _read(run_dir / "summary.json")
    if summary is not None and summary.get("status") == "completed":
        commit = provenance.commit_label(summary.get("provenance"))
        return RunState(cell, seed, run_dir, "completed" if current in (None, commit) else "other-commit", commit)
    if run_dir.is_dir():
        return RunState(cell, seed, run_dir, "incomplete", provenance.commit_label(_read(run_dir / provenance.RECORD_FILE)))
    return RunState(cell, seed, run_dir, "missing")


def states(spec: StudySpec, current: Optional[str] = None) -> list[RunState]:
    """Every run of the study (setup runs first), as it stands on disk; ``current``: see :func:`run_state`."""
    out = [run_state(spec.setup_dir(name), None, None, current) for name in spec.setup]
    out += [run_state(spec.run_dir(cell, seed), cell, seed, current) for cell in spec.cells() for seed in spec.seeds]
    return out


def _train_exe() -> str:
    return os.environ.get("ASSAY_TRAIN") or str(Path(sys.executable).with_name("assay-train"))


def setup_command(spec: StudySpec, name: str) -> list[str]:
    root = spec.setup_dir(name).parent.resolve()
    return [_train_exe(), "-m", *spec.base, *spec.setup[name], f"hydra.sweep.dir={hydra_value(str(root))}", f"hydra.sweep.subdir={name}",
            "ckpt_path=last", *spec.launcher]


def cell_command(spec: StudySpec, cell: Cell, seeds: list[int]) -> list[str]:
    root = spec.run_dir(cell, seeds[0]).parent.resolve()
    return [_train_exe(), "-m", *spec.overrides(cell), "seed=" + ",".join(map(str, seeds)), f"hydra.sweep.dir={hydra_value(str(root))}",
            "hydra.sweep.subdir=seed${seed}", "ckpt_path=last", *spec.launcher]


def _supersede(spec: StudySpec, state: RunState, echo: Callable[[str], None]) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    rel = state.dir.resolve().relative_to(spec.root.resolve())
    target = spec.root / "superseded" / rel.parent / f"{rel.name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    state.dir.rename(target)
    echo(f"[assay-study] {state.label}: started at commit {state.commit}, not this one; moved aside to {target}")


def run(spec: StudySpec, allow_mixed_commits: bool = False, dry_run: bool = False, echo: Callable[[str], None] = print) -> int:
    """Launch what the study still needs; returns 0 when every run has completed."""
    code, _ = provenance.code_state()
    current = provenance.current_label()
    if code.get("commit") is None:
        raise UserError("study", str(spec.root), "runs only from a git checkout of assay: its runs must name the commit they came from")
    if code.get("dirty"):
        echo(f"[assay-study] warning: the working tree has uncommitted changes; every run records its diff (code.diff) "
             f"and the study names the code {current}. Commit first for a study others can re-derive.")
    all_states = states(spec, current)
    other = [s for s in all_states if s.status == "other-commit"]
    if other and not allow_mixed_commits:
        commits = sorted({s.commit for s in other})
        raise UserError("study", str(spec.root), f"{len(other)} completed run(s) come from other code ({', '.join(commits)}), this is {current}: "
                        "move <study>/runs aside to rerun at this commit, or pass --allow-mixed-commits to keep them")
    for s in all_states:
        if s.status == "incomplete" and s.commit != current:
            if dry_run:
                echo(f"[assay-study] would move aside {s.label} (started at {s.commit})")
            else:
                _supersede(spec, s, echo)
                s.status = "missing"
    done = sum(s.status in ("completed", "other-commit") for s in all_states)
    total = len(all_states)
    echo(f"[assay-study] {spec.root}: {total} runs, {done} already done at {current}; launching the other {total - done}")
    if done == total:
        return 0

    logs = spec.root / "logs"
    launches: list[tuple[str, list[str]]] = []
    for name in spec.setup:
        if next(s for s in all_states if s.cell is None and s.dir == spec.setup_dir(name)).status not in ("completed", "other-commit"):
            launches.append((f"setup-{name}", setup_command(spec, name)))
    for cell in spec.cells():
        todo = [s.seed for s in all_states if s.cell == cell and s.status not in ("completed", "other-commit")]
        if todo:
            launches.append((cell.name, cell_command(spec, cell, todo)))
    progress = _Progress(spec, total, done, current, dry_run)
    say = echo if dry_run or echo is not print else progress.bar.write  # above the progress bar, not through it
    try:
        for name, cmd in launches:
            say(f"[assay-study] {name}: {shlex.join(cmd)}")
            if dry_run:
                continue
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{name}.log", "a") as log:
                log.write(f"\n# {datetime.now(timezone.utc).isoformat(timespec='seconds')} {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path.cwd())
                while proc.poll() is None:
                    progress.update(name)
                    time.sleep(1.0)
                progress.update(name)
            if proc.returncode != 0:
                say(f"[assay-study] {name}: exit code {proc.returncode}; its output is in {logs / (name + '.log')}")
    finally:
        progress.close()
    if dry_run:
        return 0
    final = states(spec, current)
    left = [s for s in final if s.status not in ("completed", "other-commit")]
    if left:
        echo(f"[assay-study] {total - len(left)} of {total} runs completed; not completed: " + ", ".join(s.label for s in left[:8])
             + (f" and {len(left) - 8} more" if len(left) > 8 else "") + " (run again to resume them)")
        return 1
    echo(f"[assay-study] all {total} runs completed at {current}; next: assay-study report {spec.root}")
    return 0


class _Progress:
    """Runs done / total with an ETA, counted from the summaries on disk (any launcher, any machine)."""

    def __init__(self, spec: StudySpec, total: int, done: int, current: str, disabled: bool):
        from tqdm.auto import tqdm

        self.spec, self.current, self.done = spec, current, done
        self.bar = tqdm(total=total, initial=done, unit="run", desc="study", disable=disabled, file=sys.stderr, dynamic_ncols=True)

    def update(self, name: str) -> None:
        now = sum(s.status in ("completed", "other-commit") for s in states(self.spec, self.current))
        self.bar.set_description(name, refresh=False)
        if now > self.done:
            self.bar.update(now - self.done)
            self.done = now

    def close(self) -> None:
        self.bar.close()
