"""``assay-provenance``: is a suspect model (or text) derived from our run? Palimpsestic membership
inference (Kuditipudi et al. 2025, arXiv 2510.19796): models remember late-seen training data best,
so a derivative of our model likes our examples in the order our run saw them.

    assay-provenance query --run <our run> --model <suspect> [--reference <independent model> ...] [--out <dir>]
    assay-provenance observe --run <our run> --text <samples.txt> [--method partition|reshuffle] [--out <dir>]
    assay-provenance card [query|observe_partition|observe_reshuffle]

``query``: Spearman's ρ between each training example's step in our run and its log-likelihood under
the suspect (minus a reference model's, with ``--reference``); p-values exact under our random
shuffle; ``query.json`` (with the memorisation curve by decile of training order), ``query.png``,
``query_examples.csv``. ``observe``: the text-only tests; ``observe.json``.

Our run must have trained with ``ordering=random`` and recorded its order (the per-sample store of
``dynamics=losses``, the default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from assay.errors import UserError, argument_parser
from assay.tracing.methods import ObservePartition, ObserveReshuffle, QueryTest


def main(argv: list[str] | None = None) -> None:
    p = argument_parser(prog="assay-provenance", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="test a suspect model by its likelihoods of our training examples")
    q.add_argument("--run", required=True, help="our run directory (its order and its data)")
    q.add_argument("--model", required=True, help="the suspect: a model directory or an assay run directory")
    q.add_argument("--reference", nargs="+", help="a model independent of our order (e.g. a run on the same data in another "
                   "shuffle); several: their log-likelihoods are averaged")
    q.add_argument("--max-examples", type=int, help="test a seeded uniform subset of this many examples")
    q.add_argument("--batch-size", type=int, default=32)
    o = sub.add_parser("observe", help="test a suspect's text")
    o.add_argument("--run", required=True, help="our run directory")
    o.add_argument("--text", required=True, help="the suspect's text, one sample per line")
    o.add_argument("--method", choices=["partition", "reshuffle"], default="partition")
    o.add_argument("--k", type=int, default=ObservePartition.k, help="partition: longest n-gram matched (tokens)")
    o.add_argument("--shuffles", type=int, default=ObserveReshuffle.shuffles, help="reshuffle: m, the retrains in fresh orders (smallest p = 1/(m+1))")
    o.add_argument("--from-step", type=int, help="reshuffle: the kept checkpoint the last phase starts from (default: the latest)")
    o.add_argument("--prompt-tokens", type=int, default=ObserveReshuffle.prompt_tokens, help="reshuffle: tokens of each line not scored (its prompt)")
    for sp in (q, o):
        sp.add_argument("--out", type=Path, help="write the result (JSON, and the query's plot) here")
        sp.add_argument("--position", choices=["last", "first"], default="last", help="an example's step: its last (default) or first")
        sp.add_argument("--min-examples", type=int, default=20)
        sp.add_argument("--permutations", type=int, default=QueryTest.permutations, help="Monte Carlo permutations of the step labels")
        sp.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("card", help="print the method card of a test")
    c.add_argument("test", nargs="?", help="query, observe_partition or observe_reshuffle (default: all)")
    args = p.parse_args(argv)

    try:
        if args.cmd == "card":
            from assay.cards import render_text
            from assay.tracing.methods import TESTS

            names = [args.test] if args.test else list(TESTS)
            for name in names:
                if name not in TESTS:
                    raise UserError("test", name, f"must be one of {list(TESTS)}")
                print(render_text("provenance/test", name, TESTS[name].card, TESTS[name].__doc__.strip().splitlines()[0]))
            return
        if args.cmd == "query":
            from assay.tracing.query import query

            result = query(args.run, args.model, args.reference, args.out, args.position, args.min_examples, args.max_examples,
                           args.permutations, args.seed, args.batch_size)
        else:
            result = observe(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(json.dumps({k: v for k, v in result.items() if k != "memorisation_curve"}, indent=2))


def observe(args) -> dict:
    from assay.tracing import observe as obs
    from assay.tracing.query import usable
    from assay.tracing.transcript import load_transcript

    t = usable(load_transcript(args.run, args.position), args.min_examples, None, args.seed)
    if args.method == "partition":
        result = obs.partition(t, args.text, args.k, args.permutations, args.seed)
    else:
        result = obs.reshuffle(t, args.text, args.shuffles, args.from_step, args.prompt_tokens, args.seed)
    result = {"test": "observe", "paper": "arXiv 2510.19796", "run": str(args.run), "text": str(args.text), "order_from": t.source, **result}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "observe.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
