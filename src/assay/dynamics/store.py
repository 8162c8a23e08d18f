"""The per-sample store: columnar records keyed by (example id, step).

Records are appended in memory and flushed as Parquet part files named by their step range, so a
reader sees whole parts only, and a resumed run can drop parts beyond its checkpoint's step
instead of writing the same (id, step) twice.

With several processes (DDP) every rank writes its own parts (``part-<first>-<last>-rank<r>``) of
the records of its own shard of each batch, and every record carries its ``rank``: a step's records
are those of all ranks' parts together, each (id, step) once. A one-process run writes
``part-<first>-<last>`` as before (``rank`` 0).

Per-sample gradient features (``GradientStore``) add one ``.npy`` array per part, row i the
features of the part's record i; readers open them memory-mapped (``read_gradients``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd


def part_name(first: int, last: int, rank: int, world: int) -> str:
    return f"part-{first:09d}-{last:09d}" + (f"-rank{rank:03d}" if world > 1 else "") + ".parquet"


def _part_range(part: Path) -> tuple[int, int]:
    first, last = (int(x) for x in part.stem.split("-")[1:3])
    return first, last


def _part_rank(part: Path) -> int:
    fields = part.stem.split("-")
    return int(fields[3].removeprefix("rank")) if len(fields) > 3 else 0


class _Sharded:
    """Which rank's parts this store writes and may rewrite (set by the recorder from the trainer)."""

    rank, world = 0, 1

    def set_rank(self, rank: int, world: int) -> None:
        self.rank, self.world = int(rank), int(world)

    def mine(self, part: Path) -> bool:
        sharded = len(part.stem.split("-")) > 3
        return not sharded if self.world == 1 else sharded and _part_rank(part) == self.rank

    def own_parts(self) -> list[Path]:
        """This rank's parts: a rank truncating on resume never touches another rank's files."""
        return [p for p in sorted(self.root.glob("part-*.parquet")) if self.mine(p)]


class PerSampleStore(_Sharded):
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
        path = self.root / part_name(self._first_step, self._last_step, self.rank, self.world)
        tmp = path.with_suffix(".tmp")
        frame = self._frame()
        frame["rank"] = self.rank
        frame.to_parquet(tmp, index=False)
        tmp.rename(path)  # atomic: readers never see half a part
        self._steps, self._first_step = [], None
        return path

    def truncate_after(self, step: int) -> None:
        """Forget records written after ``step`` (used when resuming from a checkpoint at ``step``)."""
        for part in self.own_parts():
            first, last = _part_range(part)
            if first > step:
                part.unlink()
            elif last > step:
                df = pd.read_parquet(part)
                df = df[df["step"] <= step]
                part.unlink()
                if len(df):
                    df.to_parquet(self.root / part_name(first, int(df["step"].max()), self.rank, self.world), index=False)


def read_store(root: Path) -> pd.DataFrame:
    """All records of a run, sorted by (step, id)."""
    parts = sorted(Path(root).glob("part-*.parquet"))
    if not parts:
        return pd.DataFrame(columns=["id", "step", "epoch"])
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True).sort_values(["step", "id"], kind="stable").reset_index(drop=True)


class GradientStore(_Sharded):
    """Per-sample gradient records: each flushed part is a Parquet index (id, step, epoch, scalar
    columns such as grad_norm) and ``<part>.npy``, a float32 [rows, k] array of the features in the
    index's row order. The array is written first and the index last (each through a rename), so a
    part a reader can see is always complete."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._columns: list[dict[str, list]] = []
        self._features: list[np.ndarray] = []
        self._first_step: Optional[int] = None
        self._last_step = -1

    def append(self, step: int, columns: dict[str, list], features: np.ndarray) -> None:
        rows = {k: len(v) for k, v in columns.items()}
        if set(rows.values()) != {len(features)}:
            raise ValueError(f"the features have {len(features)} rows but the columns have {rows}")
        if self._first_step is None:
            self._first_step = step
        self._last_step = step
        self._columns.append({k: list(v) for k, v in columns.items()})
        self._features.append(np.asarray(features, dtype=np.float32))

    def flush(self) -> Optional[Path]:
        if not self._columns:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / part_name(self._first_step, self._last_step, self.rank, self.world)
        index = pd.concat([pd.DataFrame(c) for c in self._columns], ignore_index=True)
        index["rank"] = self.rank
        self._write(path, index, np.concatenate(self._features))
        self._columns, self._features, self._first_step = [], [], None
        return path

    @staticmethod
    def _write(path: Path, index: pd.DataFrame, features: np.ndarray) -> None:
        with open(path.with_suffix(".npy.tmp"), "wb") as f:
            np.save(f, features)
        path.with_suffix(".npy.tmp").rename(path.with_suffix(".npy"))
        index.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").rename(path)

    def truncate_after(self, step: int) -> None:
        """Forget records written after ``step`` (used when resuming from a checkpoint at ``step``)."""
        for part in self.own_parts():
            first, last = _part_range(part)
            if last <= step:
                continue
            index, features = pd.read_parquet(part), np.load(part.with_suffix(".npy"))
            part.unlink()
            part.with_suffix(".npy").unlink()
            keep = (index["step"] <= step).to_numpy()
            if first <= step and keep.any():
                kept = index[keep].reset_index(drop=True)
                self._write(self.root / part_name(first, int(kept["step"].max()), self.rank, self.world), kept, features[keep])
        for orphan in self.root.glob("part-*.npy"):  # an array whose index was never written (killed mid-flush)
            if self.mine(orphan) and not orphan.with_suffix(".parquet").exists():
                orphan.unlink()


@dataclass
class GradientRecords:
    """What ``read_gradients`` returns: ``index`` has one row per record (id, step, epoch, the scalar
    columns, and ``part`` / ``row``: where its features are), sorted by (step, id); ``parts`` are the
    memory-mapped feature arrays."""

    index: pd.DataFrame
    parts: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.index)

    @property
    def dim(self) -> int:
        return self.parts[0].shape[1] if self.parts else 0

    def features(self, records: Optional[pd.DataFrame] = None) -> np.ndarray:
        """[len(records), k] features of ``records`` (rows of ``index``, e.g. ``index[index.step == 40]``),
        in their order; all records when None. Only those rows are read from disk."""
        records = self.index if records is None else records
        out = np.empty((len(records), self.dim), dtype=np.float32)
        parts, rows = records["part"].to_numpy(), records["row"].to_numpy()
        for p in np.unique(parts):
            at = np.flatnonzero(parts == p)
            out[at] = self.parts[p][rows[at]]
        return out


def read_gradients(root: Path) -> GradientRecords:
    """All gradient records of a run (``<run>/dynamics/gradients``)."""
    frames, arrays = [], []
    for i, part in enumerate(sorted(Path(root).glob("part-*.parquet"))):
        df = pd.read_parquet(part)
        df["part"], df["row"] = i, np.arange(len(df))
        frames.append(df)
        arrays.append(np.load(part.with_suffix(".npy"), mmap_mode="r"))
    if not frames:
        return GradientRecords(pd.DataFrame(columns=["id", "step", "epoch", "grad_norm", "part", "row"]), [])
    index = pd.concat(frames, ignore_index=True).sort_values(["step", "id"], kind="stable").reset_index(drop=True)
    return GradientRecords(index, arrays)
