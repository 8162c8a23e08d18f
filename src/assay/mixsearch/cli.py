"""``assay-mix``: mixture search from proxy runs, one command per step.

    assay-mix swarm  S -n 64 --method regmix --set mixture.num_examples=2400 -- trainer.max_steps=150 ...
    assay-mix fit    S --target 'val/loss/*' --regressor lightgbm,log_linear,bimix,autoscale,gp,projektor
    assay-mix propose S --regressor lightgbm --proposer simulation --budget 9600 --max-repetition 2
    assay-mix swarm  S2 -n 16 --freeze S/proposed/lightgbm.json:code -- ...   (olmix reuse: search only the changes)
    assay-mix propose S2 --regressor log_linear --proposer optimize --freeze S/proposed/lightgbm.json:code
    assay-mix swarm  S3 -n 16 --level topic --quality-weights '{high:70,med:30}' -- ...   (olmix levels: source:topic:quality)
    assay-mix propose S --regressor projektor --proposer projektor --lr 0.05 --scale 32000
    assay-mix pilots P.npz -- experiment=online_mixing                 (Projektor's pilot samples, for --pilots)
    assay-mix validate V --mixture S/proposed/lightgbm.yaml --baselines natural,uniform,best:S --seeds 0,1,2 -- trainer.max_steps=600
    assay-mix ddo    D --budget 2400 -- trainer.max_steps=150 ...       (then `assay-mix ddo D --fit`)
    assay-mix optimal --ddo D1 D2 --budget 9600                          (AutoScale)
    assay-mix chain  OUT -n 8 ...                                       (every step on the embedded data)

Everything after ``--`` goes to ``assay-train`` unchanged (model size, steps, launcher).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from assay.errors import UserError, argument_parser


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _positive(kind):
    """An argparse type: a finite number > 0 (0 repetitions, 0 samples mean nothing)."""
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number > 0")
        return value
    return parse


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
        return value
    return parse


def _add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--option", default="weights", help="the mixture option that reads the weights (default: weights)")
    p.add_argument("--weights-key", default="mixture.weights", help="dotted key of the weights dict (default: mixture.weights)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override every proxy gets in its own config (e.g. mixture.num_examples=2400)")


def _add_caps_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", type=float, default=None, help="examples (or tokens) a run at this scale draws: turns pool sizes into repetition caps")
    p.add_argument("--max-repetition", type=_positive(float), default=None, help="epochs allowed per domain at that budget (default 1)")
    p.add_argument("--caps", default=None, help="explicit caps per domain, e.g. '{add:0.3}' (others 1)")


# --------------------------------------------------------------------------------------------------


def _add_freeze_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--freeze", default=None, metavar="PROPOSAL.json[:CHANGED,...]",
                   help="olmix reuse: an earlier proposal; the ratios among its domains that still exist and did not change stay fixed "
                        "(one virtual domain), only the added and the listed revised domains are searched")
    p.add_argument("--level", choices=["leaf", "topic", "source"], default="leaf",
                   help="olmix's hierarchy (domains named source:topic:quality): 'source' searches one weight per source, 'topic' "
                        "one per source:topic, the leaves below at their natural shares, and expands the result to the leaves; "
                        "names with fewer parts are searched as they are. With --freeze: the free leaves are grouped")
    p.add_argument("--quality-weights", default=None, metavar="'{high:70,med:30}'",
                   help="olmix's quality upsampling (--level topic|source): each topic's share is split over its quality buckets "
                        "(the third name part) by these weights, normalised within the topic; a bucket not named gets 0")


def build_parser() -> argparse.ArgumentParser:
    ap = argument_parser(prog="assay-mix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("swarm", help="generate proxy mixtures and launch them as one multirun (re-launch skips completed ones)")
    p.add_argument("dir")
    p.add_argument("-n", type=int, default=16, help="number of proxies")
    p.add_argument("--method", choices=["dirichlet", "regmix", "list"], default="regmix")
    p.add_argument("--mixtures", default=None, help="--method list: a JSON/YAML list of {domain: weight} or a CSV with one column per domain")
    p.add_argument("--prior", default="natural", help="natural (pool shares), uniform, or '{copy:1,add:3}'")
    p.add_argument("--temperature", type=float, default=None, help="prior^(1/T) (default: 2 for regmix as in RegMix, 1 for dirichlet)")
    p.add_argument("--concentration", type=float, default=1.0, help="dirichlet: concentration per domain (× m × prior)")
    p.add_argument("--strengths", default="0.1,5,15", help="regmix: low,high,count of the log-spaced Dirichlet strengths")
    p.add_argument("--min-weight", type=float, default=2e-4, help="regmix: weights below this become 0")
    p.add_argument("--min-distance", type=float, default=1e-3, help="regmix: drop mixtures within this L1 distance of a kept one")
    p.add_argument("--domains", default=None, help="comma list (default: every domain of the pool)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-launch", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the assay-train command only")
    p.add_argument("--shard", default="0/1", help="i/k: launch every k-th pending proxy from the i-th (k launches side by side)")
    _add_spec_args(p)
    _add_caps_args(p)
    _add_freeze_args(p)

    def table_args(p):
        p.add_argument("source", help="a swarm directory, or a CSV/Parquet table with weight columns and metrics")
        p.add_argument("--target", default="val/loss", help="a summary metric, or a pattern 'val/loss/*' = average over domains (weighted by --target-weights)")
        p.add_argument("--target-weights", default=None, help="weights of the per-domain metrics in the target, e.g. '{add:2,sort:1}'")
        p.add_argument("--domains", default=None, help="table input: the weight columns (default: columns named w/<domain>)")
        p.add_argument("--scale-column", default=None, help="table input: column with each run's data quantity (BiMix, AutoScale)")
        p.add_argument("--drop-missing", action="store_true", help="exclude runs that lack the target metric (default: stop and list them)")
        p.add_argument("--pilots", default=None, help="the sources' embedded pilot samples, .npz with pilot_<source> and target arrays "
                       "(regressor projektor; default for a swarm: its pool embedded into <swarm>/pilots.npz)")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("fit", help="fit regressors of the target on the mixtures; held-out Spearman/R² table and plots")
    table_args(p)
    p.add_argument("--regressor", default="all", help="comma list or all")
    p.add_argument("--folds", type=int, default=None, help="k-fold cross-validation at any swarm size, with each fold's Spearman "
                   "(default: 5 folds up to 200 proxies, one 20%% held-out split above)")
    p.add_argument("--sizes", default=None, help="domain pool sizes '{copy:1500,...}' for --level/--freeze's natural shares "
                   "(default: the swarm's; a table without them has uniform shares)")
    p.add_argument("--out", default=None)
    _add_freeze_args(p)

    p = sub.add_parser("propose", help="the mixture the fit predicts best, written as a config the next run uses")
    table_args(p)
    p.add_argument("--regressor", default="lightgbm")
    p.add_argument("--proposer", choices=["simulation", "optimize", "projektor"], default="simulation")
    p.add_argument("--prior", default="natural")
    p.add_argument("--kl", type=_non_negative(float), default=0.0, help="optimize: weight λ of KL(x || prior)")
    p.add_argument("--samples", type=_positive(int), default=100_000, help="simulation: Dirichlet samples")
    p.add_argument("--top-k", type=int, default=128, help="simulation: average of the best k")
    p.add_argument("--strength", type=float, default=1.0, help="simulation: Dirichlet(strength · prior) (RegMix: 1)")
    p.add_argument("--lr", type=_positive(float), default=5e-4, help="projektor: first step of the projected gradient, then ×0.9 a step (Projektor: 5e-4)")
    p.add_argument("--maximize", action="store_true", help="higher target is better (accuracy)")
    p.add_argument("--scale", type=float, default=None, help="data quantity to predict at (scale-aware laws; default: the swarm's)")
    p.add_argument("--sizes", default=None, help="domain pool sizes '{copy:1500,...}' (default: the swarm's)")
    p.add_argument("--out", default=None)
    _add_caps_args(p)
    _add_spec_args(p)
    _add_freeze_args(p)

    p = sub.add_parser("pilots", help="embed the sources' pilot samples and the validation split for Projektor (an .npz for --pilots)")
    p.add_argument("out", help="the .npz to write")
    p.add_argument("--size", type=_positive(int), default=200, help="training examples per source (all of a smaller source)")
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--domains", default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("validate", help="train proposals and baselines at the target scale over seeds and compare")
    p.add_argument("dir")
    p.add_argument("--mixture", action="append", default=[], help="a proposal YAML (from propose), or name='{...}'")
    p.add_argument("--baselines", default="natural,uniform", help="natural, uniform, best:<swarm dir> (comma list)")
    p.add_argument("--best-target", default="val/loss", help="the metric that picks the best proxy")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--domains", default=None)
    p.add_argument("--target", default="test/loss")
    p.add_argument("--target-weights", default=None)
    p.add_argument("--maximize", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--include", action="append", default=[], help="another validation directory at the same scale to report alongside")
    p.add_argument("--shard", default="0/1", help="i/k: launch every k-th pending run from the i-th (then --report-only)")
    p.add_argument("--dry-run", action="store_true")
    _add_spec_args(p)

    p = sub.add_parser("ddo", help="Direct Data Optimization: 2m+1 runs perturbing one domain's amount, then --fit")
    p.add_argument("dir")
    p.add_argument("--budget", type=float, default=None, help="examples of the base run")
    p.add_argument("--base", default="natural", help="base mixture: natural, uniform or '{...}'")
    p.add_argument("--factor", type=float, default=3.0, help="each domain's amount × factor and ÷ factor (Kang et al.: 3)")
    p.add_argument("--batch-size", type=int, default=None, help="steps = examples / batch size (default: data.batch_size of the overrides)")
    p.add_argument("--steps-key", default="trainer.max_steps,trainer.val_check_interval", help="keys set to examples / batch size (comma list)")
    p.add_argument("--examples-key", default="mixture.num_examples")
    p.add_argument("--max-repetition", type=_positive(float), default=1.0)
    p.add_argument("--domains", default=None)
    p.add_argument("--fixed-steps", action="store_true", help="every run trains the largest run's steps (smaller runs repeat their "
                   "data), so the laws see the data amount at equal compute; default: one pass each, steps grow with the data")
    p.add_argument("--fit", action="store_true", help="fit the per-domain power laws and solve for the optimum at this budget")
    p.add_argument("--target", default="val/loss")
    p.add_argument("--target-weights", default=None)
    p.add_argument("--min-factor", type=float, default=0.2, help="no domain below this × its base amount (Kang et al. fix a negative domain at 0.2×)")
    p.add_argument("--no-launch", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    _add_spec_args(p)

    p = sub.add_parser("optimal", help="AutoScale: the optimal mixture at budget B from DDO optima at two smaller budgets")
    p.add_argument("--ddo", nargs=2, required=True, help="two fitted DDO directories (smaller budget first)")
    p.add_argument("--budget", type=float, required=True)
    p.add_argument("--out", default=None)

    p = sub.add_parser("chain", help="swarm → fit → propose → validate on the embedded data, one command")
    p.add_argument("dir")
    p.add_argument("-n", type=int, default=6)
    p.add_argument("--proxy-steps", type=int, default=20)
    p.add_argument("--target-steps", type=int, default=60)
    p.add_argument("--seeds", default="0")
    p.add_argument("--regressor", default="linear")
    p.add_argument("--dry-run", action="store_true")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> None:
    own, overrides = _split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    if getattr(args, "temperature", "x") is None:
        args.temperature = 2.0 if args.method == "regmix" else 1.0
    from assay.mixsearch.commands import cmd_ddo, cmd_fit, cmd_optimal, cmd_pilots, cmd_propose, cmd_swarm, cmd_validate

    try:
        if args.cmd == "swarm":
            rc = cmd_swarm(args, overrides)
        elif args.cmd == "fit":
            rc = cmd_fit(args)
        elif args.cmd == "propose":
            rc = cmd_propose(args)
        elif args.cmd == "pilots":
            rc = cmd_pilots(args, overrides)
        elif args.cmd == "validate":
            rc = cmd_validate(args, overrides)
        elif args.cmd == "ddo":
            rc = cmd_ddo(args, overrides)
        elif args.cmd == "optimal":
            rc = cmd_optimal(args)
        else:
            from assay.mixsearch.chain import run_chain

            rc = run_chain(args, overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(rc)


if __name__ == "__main__":
    main()
