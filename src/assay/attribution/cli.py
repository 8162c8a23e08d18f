"""``assay-attribution``: score attribution methods against retraining (``lds``, :mod:`assay.attribution.lds`)
and fact tracing against planted facts (``fasttrack``, :mod:`assay.attribution.fasttrack_cli`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from assay.errors import UserError


def main(argv: Optional[list[str]] = None) -> int:
    from assay.attribution import fasttrack_cli
    from assay.attribution.lds import ALPHA, ATTRIBUTIONS, MIN_SUBSETS, MIN_SUBSETS_SMOKE, TinyTraining, evaluate, write
    from assay.errors import argument_parser

    p = argument_parser(prog="assay-attribution", description="Score attribution methods against retraining (lds) and fact "
                        "tracing against planted facts (fasttrack).")
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("lds", help="the linear datamodeling score of every attribution-style scorer on the skills task")
    q.add_argument("--train", type=int, default=100, help="training examples (subsets hold half of them)")
    q.add_argument("--test", type=int, default=20, help="test examples (the LDS is their mean; the CI resamples them)")
    q.add_argument("--subsets", type=int, default=MIN_SUBSETS, help=f"subset models (at least {MIN_SUBSETS})")
    q.add_argument("--smoke", action="store_true", help=f"a quick check of the pipeline: allows {MIN_SUBSETS_SMOKE}+ subsets")
    q.add_argument("--methods", nargs="+", default=list(ATTRIBUTIONS), help=f"among {list(ATTRIBUTIONS)}")
    q.add_argument("--epochs", type=int, default=TinyTraining.epochs, help="epochs of every subset and full model")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, default=Path("lds"), help="folder for lds.csv, lds.md, lds.png")
    fasttrack_cli.add_parser(sub)
    a = p.parse_args(argv)
    if a.command == "fasttrack":
        return fasttrack_cli.run(a)
    try:
        rows = evaluate(a.train, a.test, a.subsets, a.methods, a.seed, a.smoke, TinyTraining(epochs=a.epochs, seed=a.seed))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    header = (f"LDS on skills (train={a.train}, test={a.test}, subsets={a.subsets}, alpha={ALPHA}, epochs={a.epochs}, "
              f"seed={a.seed}); CI: 95% percentile bootstrap over test examples")
    write(rows, a.out, header)
    print((a.out / "lds.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
