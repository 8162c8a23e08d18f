"""``assay-compare``: a sweep (or any set of runs) -> one table, CSV, Markdown and plots.

    assay-compare logs/train/multirun/2026-11-21_10-00-00 --by objective.name,noise.p --metric test/pref_acc
    assay-compare runA runB runC                       # explicit run directories
    assay-compare logs/train/multirun/x/0/wandb        # wandb offline run directories
    assay-compare wandb:my-entity/assay --by objective.name   # runs on the wandb server
    assay-compare sweep/ --by objective,noise.p --paired-with objective=dpo   # each objective − DPO, same seed and p
    assay-compare sweep/ --paired-with objective=dpo --metric test/pref_acc,test/loss --primary test/pref_acc

Runs that share the ``--by`` values (and differ only in their seed) are one group: each metric is
reported as mean ± std over the group with its n. A run without a summary (failed, killed, still
running) or a sweep job that never produced a directory is listed as such, never silently dropped,
because a seed that crashed is part of the result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from assay.compare.paired import against_constant, constant_markdown, paired, paired_markdown
from assay.compare.plots import expand_curves, plot_curves, plot_metrics
from assay.compare.readers import CURVES, collect
from assay.compare.table import aggregate, check_keys, choose_metrics, markdown, mixed_commits, print_table, provenance_footer, provenance_stamp, runs_frame, varying_keys
from assay.errors import UserError, argument_parser


def _run_root(path: Path) -> Path:
    """The assay run (or sweep) directory an input belongs to: a wandb directory (``<run>/wandb``,
    ``<run>/wandb/offline-run-*``) is its run's, so results never land inside wandb's files."""
    path = path.resolve()
    if path.name.startswith(("offline-run-", "run-")) and path.parent.name == "wandb":
        return path.parent.parent
    return path.parent if path.name == "wandb" else path


def default_out(inputs: list[str]) -> Path:
    """``<dir>/compare`` for the deepest directory holding every input (a sweep, or the runs' common
    parent); ``./compare`` only for inputs with nothing in common below the filesystem root."""
    import os

    roots = [_run_root(Path(i)) for i in inputs if Path(i).exists()]
    if not roots:
        return Path("compare")
    if len(roots) == 1:
        return roots[0] / "compare"
    common = Path(os.path.commonpath([str(r) for r in roots]))
    return common / "compare" if common != Path(common.anchor) else Path("compare")


def compare(inputs: list[str], by: list[str] | None = None, metrics: list[str] | None = None, out: Path | None = None,
            x: str | None = None, curves: list[str] | None = None, plots: bool = True, quiet: bool = False,
            paired_with: str | None = None, allow_mixed_commits: bool = False, primary: str | None = None,
            vs_constant: str | None = None, correction: str = "holm") -> dict[str, Any]:
    """Read, aggregate and write; returns the table, the runs and the written files. Runs of
    different commits are never pooled into one group unless ``allow_mixed_commits``."""
    runs = collect(inputs)
    by = list(by) if by else varying_keys(runs)
    by = check_keys(runs, by)
    if x is not None and x not in by:
        raise UserError("--x", x, f"must be one of the --by keys {by}")
    metrics = choose_metrics(runs, list(metrics or []))
    table = aggregate(runs, by, metrics)
    mixed = mixed_commits(table, by)
    if mixed and not allow_mixed_commits:
        raise UserError("runs", inputs if len(inputs) > 1 else inputs[0], f"{len(mixed)} group(s) would pool runs of different commits ({mixed[0]}"
                        f"{'; ...' if len(mixed) > 1 else ''}): rerun them at one commit, or pass --allow-mixed-commits to pool them anyway (the table then says so)")
    bad = [r for r in runs if r.status != "completed"]
    footer = provenance_footer(runs)
    if mixed:
        footer += "\n**Pooled across commits** (--allow-mixed-commits): " + "; ".join(mixed) + "\n"
    stamp = provenance_stamp(runs)
    if out is None:
        out = default_out(inputs)
    if out.exists() and not out.is_dir():
        raise UserError("--out", str(out), "is a file; give a directory for compare.csv, runs.csv, compare.md and the plots")
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.csv", out / "runs.csv", out / "compare.md"]
    table.to_csv(files[0], index=False)
    runs_frame(runs, by, metrics).to_csv(files[1], index=False)
    files[2].write_text(markdown(table, by, metrics, bad) + footer)
    if paired_with is not None:
        pairs = paired(runs, by, metrics, paired_with, primary, correction)
        pairs.to_csv(out / "paired.csv", index=False)
        (out / "paired.md").write_text(paired_markdown(pairs, by, metrics, paired_with, primary, correction) + footer)
        files += [out / "paired.csv", out / "paired.md"]
    if vs_constant is not None:
        claims = against_constant(runs, by, vs_constant, correction)
        claims.to_csv(out / "constant.csv", index=False)
        (out / "constant.md").write_text(constant_markdown(claims, by, correction) + footer)
        files += [out / "constant.csv", out / "constant.md"]
    if curves is not None:  # asked for by name: a curve no run recorded is a typo, not an empty plot
        recorded = {c for r in runs if r.history is not None for c in r.history.columns}
        unknown = [c for c in curves if not expand_curves(runs, [c]) or (not any(ch in c for ch in "*?[") and c not in recorded)]
        if unknown and recorded:
            raise UserError("--curve", unknown[0], f"no run's metrics.csv has it; the columns are {', '.join(sorted(recorded)[:15])}")
    if plots:
        files += plot_metrics(table, by, metrics, x, out, stamp)
        files += plot_curves(runs, by, list(curves) if curves is not None else list(CURVES), out, stamp)
    if not quiet:
        print_table(table, by, metrics, bad)
        if mixed:
            print(f"warning: {len(mixed)} group(s) pool runs of different commits (--allow-mixed-commits)", file=sys.stderr)
        print(f"wrote {len(files)} files to {out}")
    return {"table": table, "runs": runs, "by": by, "metrics": metrics, "files": files, "out": out}


def _split(values: list[str] | None) -> list[str]:
    return [v for item in values or [] for v in item.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    p = argument_parser(prog="assay-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="a sweep directory, run directories, wandb run directories, or a wandb project (entity/project or wandb:entity/project)")
    p.add_argument("--by", action="append", help="config keys to group on, comma-separated (default: every key that varies, except seeds)")
    p.add_argument("--metric", action="append", help="summary metrics to report, comma-separated (default: the headline test metrics and any selection/* detection metrics)")
    p.add_argument("--x", help="the --by key on the x axis of the metric plots (default: the last numeric --by key)")
    p.add_argument("--curve", action="append", help=f"metrics.csv columns to draw as learning curves, wildcards allowed (mixing/weight/*: an online mixer's domain weights; default: {','.join(CURVES)})")
    p.add_argument("--out", type=Path, help="where to write compare.csv, runs.csv, compare.md and the PNGs (default: <sweep>/compare)")
    p.add_argument("--paired-with", metavar="KEY=VALUE", help="also write paired.md / paired.csv: each group minus the group with KEY=VALUE "
                   "(KEY one of --by; the other --by values equal), on the same seed, with the paired t-test")
    p.add_argument("--primary", metavar="METRIC", help="with --paired-with: the declared metric whose comparisons are corrected (Holm) as one family; "
                   "the other metrics are reported as exploratory (default: the first --metric)")
    p.add_argument("--vs-constant", metavar="METRIC=VALUE", help="also write constant.md / constant.csv: each group's runs against a fixed value "
                   "(e.g. selection/is_corrupted/auroc=0.5), one-sample t-test over seeds, Holm over the groups")
    p.add_argument("--correction", choices=["holm", "bh"], default="holm", help="the multiplicity correction of --paired-with (primary metric) and "
                   "--vs-constant: holm (family-wise error, the default) or bh (Benjamini-Hochberg false discovery rate)")
    p.add_argument("--allow-mixed-commits", action="store_true", help="pool runs of different commits into one group (refused by default; the table then says which groups)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        compare(args.runs, _split(args.by) or None, _split(args.metric), args.out, args.x, _split(args.curve) or None, not args.no_plots,
                paired_with=args.paired_with, allow_mixed_commits=args.allow_mixed_commits, primary=args.primary, vs_constant=args.vs_constant, correction=args.correction)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
