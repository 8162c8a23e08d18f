"""The per-sample store: columnar records keyed by (example id, step).

Records are appended in memory and flushed as Parquet part files named by their step range, so a
reader sees whole parts only, and a resumed run can drop parts beyond its checkpoint's step
instead of writing the same (id, step) twice.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class PerSampleStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._steps: list[dict[str, list]] = []
        self._first_step: int | None = None
        self._last_step: int = -1

    def append(self, step: int, columns: dict[str, list]) -> None:
        """Add the records of one step; every column holds one value per example.

        The columns are kept as lists until ``flush``: a DataFrame per step costs milliseconds,
        a visible share of a small model's training step."""
        if self._first_step is None:
            self._first_step = step
        self._last_step = step
        self._steps.append({k: list(v) for k, v in columns.items()})

    def _frame(self) -> pd.DataFrame:
        keys = list(self._steps[0])
        if all(list(c) == keys for c in self._steps):
            return pd.DataFrame({k: [x for c in self._steps for x in c[k]] for k in keys})
        return pd.concat([pd.DataFrame(c) for c in self._steps], ignore_index=True)  # columns differ between steps

    def flush(self) -> Path | None:
        if not self._steps:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"part-{self._first_step:09d}-{self._last_step:09d}.parquet"
        tmp = path.with_suffix(".tmp")
        self._frame().to_parquet(tmp, index=False)
        tmp.rename(path)  # atomic: readers never see half a part
        self._steps, self._first_step = [], None
        return path

    def truncate_after(self, step: int) -> None:
        """Forget records written after ``step`` (used when resuming from a checkpoint at ``step``)."""
        for part in sorted(self.root.glob("part-*.parquet")):
            first, last = (int(x) for x in part.stem.split("-")[1:3])
            if first > step:
                part.unlink()
            elif last > step:
                df = pd.read_parquet(part)
                df = df[df["step"] <= step]
                part.unlink()
                if len(df):
                    df.to_parquet(self.root / f"part-{first:09d}-{int(df['step'].max()):09d}.parquet", index=False)


def read_store(root: Path) -> pd.DataFrame:
    """All records of a run, sorted by (step, id)."""
    parts = sorted(Path(root).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=["id", "step", "epoch"])
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).sort_values(["step", "id"], kind="stable").reset_index(drop=True)
