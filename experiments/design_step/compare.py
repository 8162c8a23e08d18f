"""Compare every metric two checkouts' runs of the same cells report (``<out>/before/<cell>`` vs
``<out>/after/<cell>``): equality of the floats in ``summary.json`` (NaN = NaN), and for a multi-stage
cell every stage's summary. Prints one markdown row per cell.

    python experiments/design_step/compare.py <output root>
"""
import json
import sys
from pathlib import Path

HEADLINE = ("test/loss", "test/exact_match", "test/pref_acc", "test/exact_match/add")


def metrics(run: Path) -> dict:
    """The run's metrics; a multi-stage run's stages each contribute theirs under ``<stage>:``."""
    summary = json.loads((run / "summary.json").read_text())
    out = dict(summary.get("metrics", {}))
    for stage in summary.get("stages", {}) or {}:
        stage_file = run / stage / "summary.json"
        if stage_file.is_file():
            out.update({f"{stage}:{k}": v for k, v in json.loads(stage_file.read_text()).get("metrics", {}).items()})
    return out


def same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN on both sides counts as equal


def main(out: Path) -> int:
    print("| cell | metrics compared | differing | headline (before = after) |\n|---|---|---|---|")
    differing_cells = 0
    for cell in sorted(p.name for p in (out / "before").iterdir() if (p / "summary.json").is_file()):
        a, b = metrics(out / "before" / cell), metrics(out / "after" / cell)
        shared = sorted(set(a) & set(b))
        differ = [k for k in shared if not same(a[k], b[k])]
        differing_cells += bool(differ)
        head = [k for k in shared if k.split(":")[-1] in HEADLINE][:4]
        cells = ", ".join(f"{k} {a[k]:.6g} = {b[k]:.6g}" if same(a[k], b[k]) else f"{k} {a[k]:.6g} vs {b[k]:.6g}" for k in head)
        print(f"| {cell} | {len(shared)} | {', '.join(differ) or 'none'} | {cells} |")
    return 1 if differing_cells else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
