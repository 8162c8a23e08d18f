"""``assay-study``: run a study spec and report it.

    assay-study run experiments/noisy_prefs_v3          # every (arm, seed) not yet completed at this commit
    assay-study run experiments/noisy_prefs_v3 --dry-run   # print the launches only
    assay-study status experiments/noisy_prefs_v3       # runs done / total, per arm
    assay-study report experiments/noisy_prefs_v3       # runs.csv, results.md, results_*.png

A study is a folder with a ``study.yaml`` (see ``assay.study.spec``).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from assay.errors import UserError, argument_parser


def main(argv: list[str] | None = None) -> None:
    p = argument_parser(prog="assay-study", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="launch every run the study still needs")
    r.add_argument("study", type=Path)
    r.add_argument("--allow-mixed-commits", action="store_true", help="keep completed runs of other commits instead of refusing")
    r.add_argument("--dry-run", action="store_true", help="print what would be launched")
    s = sub.add_parser("status", help="runs done / total, per arm")
    s.add_argument("study", type=Path)
    rep = sub.add_parser("report", help="write runs.csv, results.md and the plots")
    rep.add_argument("study", type=Path)
    rep.add_argument("--allow-mixed-commits", action="store_true", help="report runs of several commits together (results.md says so)")
    rep.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)

    from assay.study import check_overrides, load, report, run, states

    try:
        spec = load(args.study)
        if args.cmd == "run":
            check_overrides(spec)
            sys.exit(run(spec, allow_mixed_commits=args.allow_mixed_commits, dry_run=args.dry_run))
        elif args.cmd == "status":
            counts: dict[str, Counter] = {}
            for st in states(spec):
                counts.setdefault(st.cell.name if st.cell else "setup", Counter())[st.status] += 1
            for name, c in counts.items():
                print(f"{name}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items())))
        else:
            out = report(spec, allow_mixed_commits=args.allow_mixed_commits, plots=not args.no_plots)
            print(f"wrote {len(out['files'])} files to {spec.root}: " + ", ".join(f.name for f in out["files"]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
