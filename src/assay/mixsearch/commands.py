"""The steps of ``assay-mix``, one function per subcommand (``cmd_<name>(args[, overrides])`` -> exit
code): swarm, fit, propose, validate, ddo and optimal. The parser and the dispatch are in
:mod:`assay.mixsearch.cli`; ``chain`` runs every step in :mod:`assay.mixsearch.chain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from assay.errors import UserError, check


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


def _prior(text: str, domains: list[str], sizes: dict[str, float]) -> np.ndarray:
    from assay.mixsearch.mixture import as_vector, normalise, parse_mixture

    if text == "natural":
        missing = [d for d in domains if d not in sizes]
        check(not missing, "--sizes", ",".join(missing), f"no pool size for these domains; sizes are given for {sorted(sizes)}")
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
    leaves, frozen = domains, _grouping(args, domains, _prior("natural", domains, sizes))
    if frozen is not None:
        # olmix: sample the virtual domains' shares (frozen part, or sources) with the free domains, expand to leaves below
        from assay.mixsearch.reuse import collapse_vector

        caps, prior = collapse_vector(caps, leaves, frozen, "cap"), collapse_vector(prior, leaves, frozen, "sum")
        domains = frozen.collapsed(leaves)
        check_feasible(caps, domains)
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
    if frozen is not None:
        from assay.mixsearch.reuse import expand

        x, domains, prior = expand(x, leaves, frozen), leaves, _prior(args.prior, leaves, sizes)
        caps = caps_from(args.caps, sizes, budget, max_rep, leaves)
    swarm = Swarm(
        root=root, domains=domains, proxies=make_proxies(x, domains), spec=spec, overrides=overrides,
        prior=as_dict(prior, domains), sizes={d: float(sizes[d]) for d in domains},
        caps=None if caps is None else {d: float(c) for d, c in zip(domains, caps)},
        generator={k: getattr(args, k) for k in ("method", "n", "seed", "temperature", "concentration", "strengths", "min_weight", "min_distance", "prior", "freeze", "level", "quality_weights")},
    ).write()
    print(f"[assay-mix] wrote {len(swarm.proxies)} proxy configs to {root / 'conf' / 'proxy'} and {root / 'mixtures.csv'}")
    if args.no_launch:
        print("[assay-mix] not launched (--no-launch); launch with: assay-mix swarm " + str(root))
        return 0
    return swarm.launch([], dry_run=args.dry_run, shard=_shard(args.shard))


def _collapsed_table(args, table):
    """``fit`` over the virtual domains of --freeze / --level, as ``propose`` sees them (natural shares from the
    swarm's pool sizes or --sizes; a table without them has uniform shares)."""
    from dataclasses import replace

    from assay.mixsearch.reuse import collapse

    from assay.mixsearch.mixture import parse_mixture

    sizes = parse_mixture(args.sizes, "--sizes") if getattr(args, "sizes", None) else table.meta.get("sizes")
    grouping = _grouping(args, table.domains, _prior("natural", table.domains, sizes or {d: 1.0 for d in table.domains}))
    if grouping is None:
        return table
    return replace(table, domains=grouping.collapsed(table.domains), X=collapse(table.X, table.domains, grouping))


def _grouping(args, leaves: list[str], natural: np.ndarray):
    """The virtual domains the search runs over (olmix): the frozen part of an earlier proposal (--freeze), one
    per node at --level source|topic with its leaves at their natural shares (``natural``: the pool's counts;
    --quality-weights splits each topic over its buckets), or both (frozen first, the free leaves grouped at
    the level); else None."""
    from assay.mixsearch.levels import by_level, parse_quality_weights
    from assay.mixsearch.reuse import combine, parse_freeze

    quality = parse_quality_weights(getattr(args, "quality_weights", None))
    check(quality is None or args.level != "leaf", "--quality-weights", args.quality_weights, "needs --level topic or source "
          "(it fixes the bucket shares inside a topic; at the leaf level every bucket is searched)")
    frozen = parse_freeze(args.freeze, leaves, natural) if args.freeze else None
    if args.level == "leaf":
        return frozen
    free = None if frozen is None else [d for d in leaves if d not in frozen.ratios]
    level = by_level(leaves, natural, args.level, quality, free)
    return level if frozen is None else combine(frozen, level)


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
    if args.pilots:
        table.meta["pilots"] = args.pilots
    table = _collapsed_table(args, table)
    out = Path(args.out) if args.out else _default_out(args.source, "fit")
    report = fit_report(table, _regressor_names(args.regressor), out, folds=args.folds, seed=args.seed, echo=print)
    print(report.markdown())
    print(f"[assay-mix] table, plots and fits in {out}")
    return 0


def _regressor_names(text: str) -> list[str]:
    from assay.mixsearch.regressors import REGRESSORS

    # all: every law that needs nothing but the table (projektor, which reads the sources' pilots, only by name)
    names = [n for n, cls in REGRESSORS.items() if not cls.needs] if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
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
    if args.pilots:
        table.meta["pilots"] = args.pilots
    meta = table.meta
    sizes = meta.get("sizes")
    if args.sizes:
        sizes = parse_mixture(args.sizes, "--sizes")
    caps = caps_from(args.caps, sizes, args.budget, args.max_repetition, table.domains)
    check_feasible(caps, table.domains)
    # natural = the pool's shares (from the swarm, or --sizes); a table without sizes falls back to uniform
    prior = _prior(args.prior, table.domains, sizes or {d: 1.0 for d in table.domains})
    # the shares inside a collapsed node are the data's own counts whatever --prior says (as fit's collapse)
    natural = _prior("natural", table.domains, sizes or {d: 1.0 for d in table.domains})
    leaves, frozen = table.domains, _grouping(args, table.domains, natural)
    if frozen is not None:
        # olmix: fit and propose over the virtual domains (frozen part, or sources) + the free ones, expand the proposal
        from dataclasses import replace

        from assay.mixsearch.reuse import collapse, collapse_vector

        caps, prior = collapse_vector(caps, leaves, frozen, "cap"), collapse_vector(prior, leaves, frozen, "sum")
        table = replace(table, domains=frozen.collapsed(leaves), X=collapse(table.X, leaves, frozen))
        check_feasible(caps, table.domains)
    out = Path(args.out) if args.out else _default_out(args.source, "proposed")
    # The proposal is for the target scale: it keeps how weights reach a run (the swarm's option and
    # key) but not the proxies' own extras (their example count), unless --set gives new ones.
    from assay.mixsearch.mixture import MixtureSpec

    spec = _spec(args) if (args.set or args.option != "weights" or args.weights_key != "mixture.weights") else MixtureSpec(table.spec.option, table.spec.weights_key)
    scale = args.scale if args.scale is not None else (float(np.median(table.scale)) if table.scale is not None else None)
    for name in _regressor_names(args.regressor):
        model = fit_regressor(name, table, seed=args.seed)
        result = propose(model, table.domains, args.proposer, prior=prior, caps=caps, kl=args.kl, n_samples=args.samples, top_k=args.top_k,
                         seed=args.seed, scale=scale, maximize=table.maximize, strength=args.strength, lr=args.lr)
        meta = {"target": table.target_name, "source": str(args.source), "proposer": args.proposer, "caps": None if caps is None else caps.tolist(), "kl": args.kl, "scale": scale}
        if frozen is not None:
            from assay.mixsearch.reuse import expand

            print(result.describe(table.domains, name))
            meta |= {"groups": frozen.groups, "collapsed": dict(zip(table.domains, result.weights.tolist())), "level": args.level,
                     "quality_weights": args.quality_weights}
            result.weights = expand(result.weights, leaves, frozen)[0]
        paths = write_proposal(out, name, result, leaves, spec, meta=meta)
        print(result.describe(leaves, name))
        print(f"[assay-mix] use it: assay-train {' '.join(paths['args'])}")
        print(f"            or:     assay-train hydra.searchpath=[file://{paths['conf'].resolve()}] mixture={paths['name']}")
    return 0


# --------------------------------------------------------------------------------------------------
# pilots (Projektor)


def cmd_pilots(args, overrides: list[str]) -> int:
    from assay.mixsearch.pilots import embed_pilots

    out = Path(args.out)
    check(out.suffix == ".npz", "out", str(out), "write the pilots to an .npz file")
    pilots = embed_pilots(overrides, args.domains.split(",") if args.domains else None, args.size, args.seed, args.embedder)
    pilots.save(out)
    sizes = ", ".join(f"{d} {len(x)}" for d, x in pilots.sources.items())
    print(f"[assay-mix] pilots of {len(pilots.sources)} sources ({sizes}) and {len(pilots.target)} target examples in {out}")
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
    swarm = ddo_swarm(root, args.budget, args.factor, args.base, overrides, _spec(args), args.batch_size, args.steps_key, args.examples_key, args.domains, args.max_repetition, args.fixed_steps)
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
