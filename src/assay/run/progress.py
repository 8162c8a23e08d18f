"""What a long phase of a run shows while it works: its name, done/total and the time left.

Every loop that can take more than a few seconds before the first training step or after the last
(reference log-probs, selection scoring and embedding passes over the pool) and Lightning's own loops
(training, validation, testing with its generations and KL; ``assay.run.progress_bars``) report
through here:

- on a terminal, a bar (tqdm for the phases, Rich for Lightning's loops) that gives seconds per
  item when items are slow instead of ``0.00it/s``, and an ETA from the mean rate since the bar
  started (never ``-:--:--`` because one step takes longer than a rate window);
- when the console is not a terminal (a SLURM log, a pipe, a CI job), a plain line at every tenth of
  the phase, once the phase has run ``PLAIN_AFTER_S`` seconds: a short phase prints nothing, a long
  one about ten lines, never a stream of carriage returns;
- nothing when ``trainer.enable_progress_bar=false`` (:func:`set_enabled`).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, Iterable, Iterator, Optional, TypeVar

from assay.run import log as runlog

T = TypeVar("T")

PLAIN_AFTER_S = 5.0
"""Without a terminal, a phase that ends sooner than this prints no progress line."""
PLAIN_STEPS = 10
"""Without a terminal, a line at every 1/PLAIN_STEPS of a phase (unless it asks for fewer ``lines``)."""
_ENABLED = [True]


def set_enabled(enabled: bool) -> None:
    """Show progress (``trainer.enable_progress_bar``); set once per run before its first phase."""
    _ENABLED[0] = bool(enabled)


def enabled() -> bool:
    return _ENABLED[0]


def interactive(stream: Any = None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal that redraws a bar in place."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def clock(seconds: Optional[float]) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=max(0, int(seconds))))


def rate_text(per_second: Optional[float], unit: str = "it", sep: str = " ") -> str:
    """``3.20 it/s``, or ``12.5 s/it`` when items take longer than a second (never ``0.00it/s``)."""
    if not per_second:
        return f"?{sep}s/{unit}"
    return f"{per_second:.2f}{sep}{unit}/s" if per_second >= 1 else f"{1 / per_second:.1f}{sep}s/{unit}"


class Rate:
    """Done/total with the mean rate since the start, counted from ``initial`` (a resumed loop's
    first value): items done before the start do not make the rate look fast."""

    def __init__(self, total: Optional[float], initial: float = 0):
        self.total, self.initial, self.done = total, initial, initial
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def per_second(self) -> Optional[float]:
        moved = self.done - self.initial
        return moved / self.elapsed if moved > 0 and self.elapsed > 0 else None

    @property
    def remaining(self) -> Optional[float]:
        if not self.total or self.per_second is None:
            return None
        return max(0.0, self.total - self.done) / self.per_second

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class Progress:
    """One phase: ``with Progress("reference log-probs (train)", total=n) as p: ... p.update()``
    (``plain``: lines even on a terminal, for a loop that already has a bar of its own; ``lines``: how
    many lines a long phase prints without a terminal)."""

    def __init__(self, desc: str, total: Optional[float], unit: str = "batch", initial: float = 0, disable: bool = False,
                 plain: bool = False, lines: int = PLAIN_STEPS):
        self.desc, self.unit, self.lines = desc, unit, lines
        self.rate = Rate(total, initial)
        self._bar = None
        self._next_line = 1
        self._printed: Optional[float] = None
        self.active = enabled() and not disable
        if self.active and not plain and interactive():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.set(self.rate.done + n, **fields)

    def set(self, done: float, **fields: Any) -> None:
        """The absolute position (a training step); ``fields`` are shown after it (``loss=1.23``)."""
        moved = done - self.rate.done
        self.rate.done = done
        if not self.active:
            return
        if self._bar is not None:
            if fields:
                self._bar.set_postfix(fields, refresh=False)
            self._bar.update(moved)
            return
        if self.rate.total and self.rate.elapsed >= PLAIN_AFTER_S:
            step = int(self.rate.fraction * self.lines)
            if step >= self._next_line:
                self._next_line = step + 1
                self.line(fields)

    def line(self, fields: Optional[dict] = None) -> None:
        r = self.rate
        self._printed = r.done
        total = int(r.total) if r.total else "?"
        extra = "".join(f", {k} {v:.4g}" if isinstance(v, float) else f", {k} {v}" for k, v in (fields or {}).items())
        runlog.info("%s: %d/%s (%d%%), %s elapsed, ETA %s (%s)%s", self.desc, int(r.done), total, round(100 * r.fraction),
                    clock(r.elapsed), clock(r.remaining), rate_text(r.per_second, self.unit), extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.active and self._printed is not None and self._printed != self.rate.done:
            self.line()  # a phase that printed lines says where it ended (stopped early, or total was an estimate)
        self.active = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "batch", disable: bool = False) -> Iterator[T]:
    """``items`` with progress shown as they are consumed."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total, unit, disable=disable) as p:
        for item in items:
            yield item
            p.update()

