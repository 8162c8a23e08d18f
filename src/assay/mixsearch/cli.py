"""``assay-mix``: mixture search from proxy runs, one command per step.

    assay-mix swarm  S -n 64 --method regmix --set mixture.num_examples=2400 -- trainer.max_steps=150 ...
    assay-mix fit    S --target 'val/loss/*' --regressor lightgbm,log_linear,bimix,autoscale,gp
    assay-mix propose S --regressor lightgbm --proposer simulation --budget 9600 --max-repetition 2
    assay-mix validate V --mixture S/proposed/lightgbm.yaml --baselines natural,uniform,best:S --seeds 0,1,2 -- trainer.max_steps=600
    assay-mix ddo    D --budget 2400 -- trainer.max_steps=150 ...       (then `assay-mix ddo D --fit`)
    assay-mix optimal --ddo D1 D2 --budget 9600                          (AutoScale)
    assay-mix chain  OUT -n 8 ...                                       (every step on the embedded data)

Everything after ``--`` goes to ``assay-train`` unchanged (model size, steps, launcher).
"""

from __future__ import annotations

import argparse
import math
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from assay.errors import UserError, argument_parser, check


def _split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        check("=" in item, "--set", item, "write key=value (a dotted config key of assay-train)")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)  # 2400 -> int, 0.5 -> float, true -> bool, text stays text
    return out


def _spec(args) -> "MixtureSpec":
    from assay.mixsearch.mixture import MixtureSpec

    return MixtureSpec(option=args.option, weights_key=args.weights_key, extra=_parse_set(args.set))


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


def _prior(text: str, domains: list[str], sizes: dict[str, float]) -> np.ndarray:
    from assay.mixsearch.mixture import as_vector, normalise, parse_mixture

    if text == "natural":
        return np.array([sizes[d] for d in domains], dtype=float) / sum(sizes[d] for d in domains)
    if text == "uniform":
        return np.full(len(domains), 1.0 / len(domains))
    v = as_vector(normalise(parse_mixture(text, "--prior"), "--prior"), domains, "--prior")
    check(bool((v > 0).all()), "--prior", text, "a Dirichlet prior needs every domain > 0")
    return v


# --------------------------------------------------------------------------------------------------
# swarm


def cmd_swarm(args, overrides: list[str]) -> int:
    from assay.mixsearch.mixture import as_dict, caps_from, check_feasible
    from assay.mixsearch.pool import pool_sizes
    from assay.mixsearch.swarm import Swarm, dirichlet_swarm, make_proxies, read_mixture_list, regmix_swarm

    root = Path(args.dir)
    if (root / "swarm.json").is_file():
        swarm = Swarm.load(root)
        print(f"[assay-mix] swarm {root} exists ({len(swarm.proxies)} proxies); re-launching what has not completed")
        return swarm.launch(overrides, dry_run=args.dry_run, shard=_shard(args.shard)) if not args.no_launch else 0
    spec = _spec(args)
    sizes = pool_sizes(overrides)
    domains = list(args.domains.split(",")) if args.domains else list(sizes)
    unknown = [d for d in domains if d not in sizes]
    check(not unknown, "--domains", ",".join(unknown), f"unknown domain; the pool's domains are {sorted(sizes)}")
    budget = args.budget if args.budget is not None else spec.extra.get("mixture.num_examples")
    max_rep = args.max_repetition if args.max_repetition is not None else spec.extra.get("mixture.max_repetition", 1)
    caps = caps_from(args.caps, sizes, budget, max_rep, domains)
    check_feasible(caps, domains)
    prior = _prior(args.prior, domains, sizes)
    if args.method == "list":
        check(args.mixtures is not None, "--mixtures", None, "--method list needs a file of mixtures")
        from assay.mixsearch.mixture import as_vector

        x = np.array([as_vector(m, domains, f"--mixtures[{i}]") for i, m in enumerate(read_mixture_list(Path(args.mixtures)))])
        if caps is not None:
            over = [(i, domains[j]) for i, j in zip(*np.nonzero(x > caps[None, :] + 1e-9))]
            check(not over, "--mixtures", f"mixture {over[0][0] if over else ''}", f"exceeds the cap of {over[0][1] if over else ''}" if over else "")
    elif args.method == "dirichlet":
        x = dirichlet_swarm(prior, args.n, args.seed, args.temperature, args.concentration, caps)
    else:
        lo, hi, k = (float(v) for v in args.strengths.split(","))
        x = regmix_swarm(prior, args.n, args.seed, args.temperature, (lo, hi, int(k)), args.min_weight, caps, args.min_distance)
    swarm = Swarm(
        root=root, domains=domains, proxies=make_proxies(x, domains), spec=spec, overrides=overrides,
        prior=as_dict(prior, domains), sizes={d: float(sizes[d]) for d in domains},
        caps=None if caps is None else {d: float(c) for d, c in zip(domains, caps)},
        generator={k: getattr(args, k) for k in ("method", "n", "seed", "temperature", "concentration", "strengths", "min_weight", "min_distance", "prior")},
    ).write()
    print(f"[assay-mix] wrote {len(swarm.proxies)} proxy configs to {root / 'conf' / 'proxy'} and {root / 'mixtures.csv'}")
    if args.no_launch:
        print("[assay-mix] not launched (--no-launch); launch with: assay-mix swarm " + str(root))
        return 0
    return swarm.launch([], dry_run=args.dry_run, shard=_shard(args.shard))


def _shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError("--shard", text, "write i/k, e.g. 0/3 (the i-th of k launches side by side)") from None
    return i, k


# --------------------------------------------------------------------------------------------------
# fit


def cmd_fit(args) -> int:
    from assay.mixsearch.fit import fit_report
    from assay.mixsearch.table import load_table

    table = load_table(args.source, args.domains, args.target, args.target_weights, args.scale_column, drop_missing=args.drop_missing, echo=print)
    out = Path(args.out) if args.out else _default_out(args.source, "fit")
    report = fit_report(table, _regressor_names(args.regressor), out, folds=args.folds, seed=args.seed, echo=print)
    print(report.markdown())
    print(f"[assay-mix] table, plots and fits in {out}")
    return 0


def _regressor_names(text: str) -> list[str]:
    from assay.mixsearch.regressors import REGRESSORS

    names = list(REGRESSORS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        check(n in REGRESSORS, "--regressor", n, f"unknown regressor; choose from {sorted(REGRESSORS)}")
    return names


def _default_out(source: str, what: str) -> Path:
    p = Path(source)
    return (p if p.is_dir() else p.parent) / what


# --------------------------------------------------------------------------------------------------
# propose


def cmd_propose(args) -> int:
    from assay.mixsearch.mixture import caps_from, check_feasible, parse_mixture
    from assay.mixsearch.propose import propose, write_proposal
    from assay.mixsearch.regressors import fit_regressor
    from assay.mixsearch.table import load_table

    table = load_table(args.source, args.domains, args.target, args.target_weights, args.scale_column, maximize=args.maximize, drop_missing=args.drop_missing, echo=print)
    meta = table.meta
    sizes = meta.get("sizes")
    if args.sizes:
        sizes = parse_mixture(args.sizes, "--sizes")
    caps = caps_from(args.caps, sizes, args.budget, args.max_repetition, table.domains)
    check_feasible(caps, table.domains)
    # natural = the pool's shares (from the swarm, or --sizes); a table without sizes falls back to uniform
    prior = _prior(args.prior, table.domains, sizes or {d: 1.0 for d in table.domains})
    out = Path(args.out) if args.out else _default_out(args.source, "proposed")
    # The proposal is for the target scale: it keeps how weights reach a run (the swarm's option and
    # key) but not the proxies' own extras (their example count), unless --set gives new ones.
    from assay.mixsearch.mixture import MixtureSpec

    spec = _spec(args) if (args.set or args.option != "weights" or args.weights_key != "mixture.weights") else MixtureSpec(table.spec.option, table.spec.weights_key)
    scale = args.scale if args.scale is not None else (float(np.median(table.scale)) if table.scale is not None else None)
    for name in _regressor_names(args.regressor):
        model = fit_regressor(name, table, seed=args.seed)
        result = propose(model, table.domains, args.proposer, prior=prior, caps=caps, kl=args.kl, n_samples=args.samples, top_k=args.top_k,
                         seed=args.seed, scale=scale, maximize=table.maximize, strength=args.strength)
        paths = write_proposal(out, name, result, table.domains, spec, meta={"target": table.target_name, "source": str(args.source), "proposer": args.proposer, "caps": None if caps is None else caps.tolist(), "kl": args.kl})
        print(result.describe(table.domains, name))
        print(f"[assay-mix] use it: assay-train {' '.join(paths['args'])}")
        print(f"            or:     assay-train hydra.searchpath=[file://{paths['conf'].resolve()}] mixture={paths['name']}")
    return 0


# --------------------------------------------------------------------------------------------------
# validate


def cmd_validate(args, overrides: list[str]) -> int:
    from assay.mixsearch.validate import build_validation, report_validation

    root = Path(args.dir)
    if not args.report_only:
        swarm = build_validation(root, args.mixture, args.baselines, [int(s) for s in args.seeds.split(",")], overrides, _spec(args), args.domains, args.best_target)
        rc = swarm.launch([], dry_run=args.dry_run, shard=_shard(args.shard))
        if rc != 0 or args.dry_run or args.shard != "0/1":
            return rc
    rep = report_validation(root, args.target, args.target_weights, args.maximize, [Path(p) for p in args.include])
    print(rep)
    return 0


# --------------------------------------------------------------------------------------------------
# DDO / AutoScale


def cmd_ddo(args, overrides: list[str]) -> int:
    from assay.mixsearch.ddo import ddo_fit_swarm, ddo_swarm

    root = Path(args.dir)
    if args.fit:
        result = ddo_fit_swarm(root, args.target, args.target_weights, min_factor=args.min_factor)
        print(result.describe())
        return 0
    swarm = ddo_swarm(root, args.budget, args.factor, args.base, overrides, _spec(args), args.batch_size, args.steps_key, args.examples_key, args.domains, args.max_repetition)
    if args.no_launch:
        return 0
    return swarm.launch([], dry_run=args.dry_run)


def cmd_optimal(args) -> int:
    from assay.mixsearch.ddo import DDOResult, autoscale_predict
    from assay.mixsearch.propose import ProposalResult, write_proposal
    from assay.mixsearch.swarm import Swarm

    check(len(args.ddo) == 2, "--ddo", args.ddo, "AutoScale needs the DDO optima at two smaller budgets")
    a, b = (DDOResult.load(Path(p)) for p in args.ddo)
    pred = autoscale_predict(a, b, args.budget)
    print(pred.describe())
    spec = Swarm.load(Path(args.ddo[1])).spec
    result = ProposalResult(weights=pred.weights_vector(), predicted=float("nan"), proposer=f"autoscale@{args.budget:g}", active_caps=[])
    out = Path(args.out) if args.out else Path(args.ddo[1]) / "proposed"
    paths = write_proposal(out, f"autoscale_{int(args.budget)}", result, pred.domains, spec, meta={"budget": args.budget, "from": args.ddo, "amounts": pred.amounts})
    print(f"[assay-mix] use it: assay-train {' '.join(paths['args'])}")
    return 0


# --------------------------------------------------------------------------------------------------


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

    def table_args(p):
        p.add_argument("source", help="a swarm directory, or a CSV/Parquet table with weight columns and metrics")
        p.add_argument("--target", default="val/loss", help="a summary metric, or a pattern 'val/loss/*' = average over domains (weighted by --target-weights)")
        p.add_argument("--target-weights", default=None, help="weights of the per-domain metrics in the target, e.g. '{add:2,sort:1}'")
        p.add_argument("--domains", default=None, help="table input: the weight columns (default: columns named w/<domain>)")
        p.add_argument("--scale-column", default=None, help="table input: column with each run's data quantity (BiMix, AutoScale)")
        p.add_argument("--drop-missing", action="store_true", help="exclude runs that lack the target metric (default: stop and list them)")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("fit", help="fit regressors of the target on the mixtures; held-out Spearman/R² table and plots")
    table_args(p)
    p.add_argument("--regressor", default="all", help="comma list or all")
    p.add_argument("--folds", type=int, default=5, help="k-fold cross-validation folds (a 20%% held-out split above 200 rows)")
    p.add_argument("--out", default=None)

    p = sub.add_parser("propose", help="the mixture the fit predicts best, written as a config the next run uses")
    table_args(p)
    p.add_argument("--regressor", default="lightgbm")
    p.add_argument("--proposer", choices=["simulation", "optimize"], default="simulation")
    p.add_argument("--prior", default="natural")
    p.add_argument("--kl", type=_non_negative(float), default=0.0, help="optimize: weight λ of KL(x || prior)")
    p.add_argument("--samples", type=_positive(int), default=100_000, help="simulation: Dirichlet samples")
    p.add_argument("--top-k", type=int, default=128, help="simulation: average of the best k")
    p.add_argument("--strength", type=float, default=1.0, help="simulation: Dirichlet(strength · prior) (RegMix: 1)")
    p.add_argument("--maximize", action="store_true", help="higher target is better (accuracy)")
    p.add_argument("--scale", type=float, default=None, help="data quantity to predict at (scale-aware laws; default: the swarm's)")
    p.add_argument("--sizes", default=None, help="domain pool sizes '{copy:1500,...}' (default: the swarm's)")
    p.add_argument("--out", default=None)
    _add_caps_args(p)
    _add_spec_args(p)

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
    try:
        if args.cmd == "swarm":
            rc = cmd_swarm(args, overrides)
        elif args.cmd == "fit":
            rc = cmd_fit(args)
        elif args.cmd == "propose":
            rc = cmd_propose(args)
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
