"""Validate: proposals and baselines trained at the target scale over seeds, then one comparison table.

The validation runs are a swarm like any other (one config per mixture × seed, run directories
named ``<mixture>-s<seed>``), so the same launchers apply and a re-launch only runs what is missing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from assay.errors import UserError, check
from assay.mixsearch.mixture import MixtureSpec, as_dict, normalise, parse_mixture
from assay.mixsearch.swarm import Proxy, Swarm
from assay.mixsearch.table import target_value

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""A mixture name becomes a config file and a Hydra override value: letters, digits, _ and - only."""


def best_proxy(swarm_dir: Path, target: str) -> dict[str, float]:
    from assay.mixsearch.table import load_table

    table = load_table(swarm_dir, target=target, echo=lambda s: None)
    i = int(np.argmin(table.y))
    return {d: float(w) for d, w in zip(table.domains, table.X[i])}


def build_validation(root: Path, mixtures: Sequence[str], baselines: str, seeds: list[int], overrides: list[str], spec: MixtureSpec,
                     domains_arg: Optional[str] = None, best_target: str = "val/loss") -> Swarm:
    from assay.mixsearch.pool import pool_sizes
    from assay.mixsearch.propose import read_proposal

    if (root / "swarm.json").is_file():
        print(f"[assay-mix] validation {root} exists; re-launching what has not completed")
        return Swarm.load(root)
    check(len(seeds) > 0, "--seeds", seeds, "give at least one seed")
    sizes = pool_sizes(overrides)
    domains = domains_arg.split(",") if domains_arg else list(sizes)
    named: list[tuple[str, dict[str, float]]] = []
    for item in mixtures:
        if "=" in item and not Path(item).exists():
            name, text = item.split("=", 1)
            named.append((name, normalise(parse_mixture(text, f"--mixture {name}"), f"--mixture {name}")))
        else:
            named.append(read_proposal(Path(item)))
    for b in [b.strip() for b in baselines.split(",") if b.strip()]:
        if b == "natural":
            named.append(("natural", {d: sizes[d] / sum(sizes[x] for x in domains) for d in domains}))
        elif b == "uniform":
            named.append(("uniform", {d: 1.0 / len(domains) for d in domains}))
        elif b.startswith("best:"):
            named.append(("best_proxy", best_proxy(Path(b[5:]), best_target)))
        else:
            raise UserError("--baselines", b, "choose natural, uniform or best:<swarm dir>")
    # Identical mixtures train once (on the skills corpus the natural mixture is the uniform one);
    # the report names the others as aliases.
    unique: list[tuple[str, dict[str, float]]] = []
    aliases: dict[str, list[str]] = {}
    for name, w in named:
        check(bool(NAME.match(name)), "--mixture", name, "a name may use letters, digits, _ and -")
        unknown = sorted(set(w) - set(domains))
        check(not unknown, f"--mixture {name}", ",".join(unknown), f"unknown domain; domains are {domains}")
        vec = np.array([w.get(d, 0.0) for d in domains])
        for j, (other, ow) in enumerate(unique):
            if np.abs(vec - np.array([ow.get(d, 0.0) for d in domains])).sum() < 1e-4:
                aliases.setdefault(other, []).append(name)
                break
        else:
            unique.append((name, w))
    # Seed-major: the first seed of every mixture comes first, so a launch cut short (or k shards side
    # by side) still compares every mixture on the same seeds.
    proxies = [Proxy(f"{name}-s{seed}", as_dict(np.array([w.get(d, 0.0) for d in domains]), domains), {"seed": seed}) for seed in seeds for name, w in unique]
    swarm = Swarm(root=root, domains=domains, proxies=proxies, spec=spec, overrides=overrides, sizes={d: float(sizes[d]) for d in domains},
                  generator={"method": "validation", "mixtures": {n: w for n, w in unique}, "aliases": aliases, "seeds": seeds}).write()
    print(f"[assay-mix] validation: {len(unique)} mixtures × {len(seeds)} seeds = {len(proxies)} runs in {root}")
    return swarm


def report_validation(root: Path, target: str = "test/loss", target_weights: Optional[str] = None, maximize: bool = False, include: Sequence[Path] = ()) -> str:
    """One table over the validation runs of ``root`` (and of ``include``: validation directories run
    earlier at the same scale, e.g. the baselines started before the swarm finished)."""
    swarm = Swarm.load(root)
    tw = normalise(parse_mixture(target_weights, "--target-weights"), "--target-weights") if target_weights else None
    groups: dict[str, list[tuple[float, dict]]] = {}
    missing = []
    mixes: dict[str, dict] = {}
    aliases: dict[str, list[str]] = {}
    for sw in [Swarm.load(r) for r in include] + [swarm]:
        check(sw.domains == swarm.domains, "--include", str(sw.root), f"covers domains {sw.domains}, not {swarm.domains}")
        check(sw.overrides == swarm.overrides, "--include", str(sw.root), "was run with other overrides (another scale); its runs are not comparable")
        status = sw.status()
        mixes.update(sw.generator.get("mixtures", {}))
        aliases.update(sw.generator.get("aliases", {}))
        for p in sw.proxies:
            name = p.id.rsplit("-s", 1)[0]
            groups.setdefault(name, [])
            if status[p.id] != "completed":
                missing.append(p.id)
                continue
            metrics = json.loads((sw.run_dir(p.id) / "summary.json").read_text())["metrics"]
            v = target_value(metrics, target, tw, swarm.domains)
            if v is None:
                raise UserError("--target", target, f"missing from validation run {p.id}")
            groups[name].append((v, metrics))
    rows = []
    for name, vals in groups.items():
        if not vals:
            continue
        y = np.array([v for v, _ in vals])
        em = [m.get("test/exact_match") for _, m in vals]
        em_mean = float(np.mean(em)) if all(e is not None for e in em) else float("nan")
        rows.append((name, float(y.mean()), float(y.std(ddof=1)) if len(y) > 1 else float("nan"), len(y), em_mean, mixes.get(name, {})))
    rows.sort(key=lambda r: -r[1] if maximize else r[1])
    lines = [
        f"target `{target}` at the target scale (mean ± sd over seeds; {'higher' if maximize else 'lower'} is better)",
        "",
        "| mixture | " + target + " | seeds | test/exact_match | weights (" + ", ".join(swarm.domains) + ") |",
        "|---|---|---|---|---|",
    ]
    for name, mean, sd, n, em, w in rows:
        ws = ", ".join(f"{float(w.get(d, 0.0)):.3f}" for d in swarm.domains)
        label = name + "".join(f" (= {a})" for a in aliases.get(name, []))
        lines.append(f"| {label} | {mean:.4f} ± {sd:.4f} | {n} | {em:.3f} | {ws} |")
    if missing:
        lines.append("")
        lines.append(f"not completed ({len(missing)}): {', '.join(missing)}")
    text = "\n".join(lines)
    (root / "report.md").write_text(text + "\n")
    return text
