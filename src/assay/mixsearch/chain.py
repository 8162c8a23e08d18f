"""``assay-mix chain``: swarm → fit → propose → validate on the embedded skills data, one command.

Proxies are a small model for ``--proxy-steps``; validation trains the default tiny model for
``--target-steps`` with the proposal against the natural and the best proxy mixture. Everything after
``--`` is added to every run (e.g. ``debug=fast`` for a smoke test).
"""

from __future__ import annotations

from pathlib import Path

from assay.mixsearch.mixture import MixtureSpec

PROXY = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=2",
         "eval.val_generate=false", "logger=none", "dynamics=off", "trainer.enable_progress_bar=false"]
TARGET = ["logger=none", "dynamics=off", "trainer.enable_progress_bar=false"]


def run_chain(args, overrides: list[str]) -> int:
    import numpy as np

    from assay.mixsearch.fit import fit_report
    from assay.mixsearch.propose import propose, write_proposal
    from assay.mixsearch.regressors import fit_regressor
    from assay.mixsearch.swarm import Swarm, make_proxies, regmix_swarm
    from assay.mixsearch.table import load_table
    from assay.mixsearch.validate import build_validation, report_validation
    from assay.mixsearch.pool import pool_sizes

    root = Path(args.dir)
    swarm_dir, val_dir = root / "swarm", root / "validate"
    proxy_over = PROXY + [f"trainer.max_steps={args.proxy_steps}", f"trainer.val_check_interval={args.proxy_steps}"] + overrides
    target_over = TARGET + [f"trainer.max_steps={args.target_steps}", f"trainer.val_check_interval={args.target_steps}"] + overrides
    target = "val/loss/*"

    # 1. swarm
    if (swarm_dir / "swarm.json").is_file():
        swarm = Swarm.load(swarm_dir)
    else:
        sizes = pool_sizes(proxy_over)
        domains = list(sizes)
        prior = np.array([sizes[d] for d in domains], float)
        prior /= prior.sum()
        x = regmix_swarm(prior, args.n, 0)
        swarm = Swarm(swarm_dir, domains, make_proxies(x, domains), MixtureSpec(), proxy_over, prior={d: float(p) for d, p in zip(domains, prior)},
                      sizes={d: float(sizes[d]) for d in domains}, generator={"method": "regmix", "n": args.n}).write()
    rc = swarm.launch([], dry_run=args.dry_run)
    if rc != 0 or args.dry_run:
        return rc

    # 2. fit
    table = load_table(swarm_dir, target=target)
    names = [n.strip() for n in args.regressor.split(",")]
    report = fit_report(table, names, swarm_dir / "fit")
    print(report.markdown())

    # 3. propose (the first regressor; a tree is proposed by simulation, Projektor by its gradient, a law by the optimiser)
    model = fit_regressor(names[0], table)
    prior = np.array([table.meta["prior"][d] for d in table.domains])
    proposer = "projektor" if not model.batch_predict else "optimize" if model.smooth else "simulation"
    result = propose(model, table.domains, proposer, prior, n_samples=20_000, top_k=32)
    print(result.describe(table.domains, names[0]))
    write_proposal(swarm_dir / "proposed", names[0], result, table.domains, table.spec, meta={"target": target})

    # 4. validate
    seeds = [int(s) for s in args.seeds.split(",")]
    val = build_validation(val_dir, [str(swarm_dir / "proposed" / f"{names[0]}.json")], f"natural,best:{swarm_dir}", seeds, target_over, MixtureSpec(), best_target=target)
    rc = val.launch([])
    if rc != 0:
        return rc
    print(report_validation(val_dir, "test/loss/*"))
    return 0
