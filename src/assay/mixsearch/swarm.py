"""Swarm: N proxy mixtures, written as configs and launched as one ordinary Hydra multirun.

A swarm directory holds everything the later steps read:

    <swarm>/swarm.json           domains, prior, caps, how it was generated, the common run overrides
    <swarm>/mixtures.csv         one row per proxy: id and its weight per domain
    <swarm>/conf/proxy/<id>.yaml one ``@package _global_`` config per proxy (its mixture + run overrides)
    <swarm>/runs/<id>/           each proxy's normal run directory (summary.json when it completed)

Launching is ``assay-train -m hydra.searchpath=[file://<swarm>/conf] +proxy=<ids> ...`` with the run
directory named by the proxy id, so any launcher (local, joblib, SLURM) works unchanged and a
re-launch submits only the proxies without a completed summary.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from assay.errors import UserError, check
from assay.mixsearch.mixture import Mixture, MixtureSpec, as_dict, normalise, write_json

# RegMix (Liu et al. 2024, sail-sg/regmix mixture_config/synthesize_mixture.py): the Dirichlet
# concentration of each candidate is one of 15 log-spaced strengths in [0.1, 5]; small strengths give
# sparse mixtures (a few domains dominate), large ones stay close to the prior.
REGMIX_STRENGTHS = (0.1, 5.0, 15)
REGMIX_MIN_WEIGHT = 2e-4
"""Weights below this are set to zero and the rest rounded to multiples of it (RegMix's MINIMUM)."""


@dataclass
class Proxy:
    id: str
    weights: Mixture
    extra: dict[str, Any] = field(default_factory=dict)
    """Run overrides of this proxy only (a DDO run's data amount, a validation run's seed)."""


def tempered(prior: np.ndarray, temperature: float) -> np.ndarray:
    """p_i ∝ prior_i^(1/T): T=1 the prior itself, T→∞ uniform (RegMix uses prior^0.5, i.e. T=2)."""
    check(temperature > 0, "temperature", temperature, "must be > 0")
    p = np.power(np.asarray(prior, dtype=float), 1.0 / temperature)
    return p / p.sum()


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Dirichlet draws via gamma variates, re-drawing the rare rows whose gammas all underflow to 0
    (tiny concentrations)."""
    g = rng.standard_gamma(alpha)
    bad = g.sum(axis=-1) <= 0
    while bad.any():
        g[bad] = rng.standard_gamma(alpha[bad] if alpha.ndim == 2 else np.broadcast_to(alpha, g[bad].shape))
        bad = g.sum(axis=-1) <= 0
    return g / g.sum(axis=-1, keepdims=True)


def dirichlet_swarm(prior: np.ndarray, n: int, seed: int, temperature: float = 1.0, concentration: float = 1.0, caps: Optional[np.ndarray] = None) -> np.ndarray:
    """n draws from Dirichlet(concentration · prior^(1/T)), rejecting draws that break a cap."""
    check(concentration > 0, "concentration", concentration, "must be > 0")
    rng = np.random.default_rng(seed)
    alpha = concentration * tempered(prior, temperature) * len(prior)
    return _accept(lambda k: _dirichlet(rng, np.broadcast_to(alpha, (k, len(prior))).copy()), n, caps)


def regmix_swarm(
    prior: np.ndarray, n: int, seed: int, temperature: float = 2.0, strengths: tuple[float, float, int] = REGMIX_STRENGTHS,
    min_weight: float = REGMIX_MIN_WEIGHT, caps: Optional[np.ndarray] = None, min_distance: float = 1e-3,
) -> np.ndarray:
    """RegMix's generator: per candidate a strength s from a log range, Dirichlet(s · prior^(1/T)),
    weights below ``min_weight`` zeroed, rounded to multiples of it, caps respected, near-duplicates
    (L1 distance below ``min_distance`` to a kept mixture) dropped."""
    lo, hi, k = strengths
    check(0 < lo <= hi, "strengths", strengths, "need 0 < low <= high")
    rng = np.random.default_rng(seed)
    grid = np.geomspace(lo, hi, int(k))
    base = tempered(prior, temperature)

    def draw(k: int) -> np.ndarray:
        s = rng.choice(grid, size=k)
        x = _dirichlet(rng, s[:, None] * base[None, :])
        x[x < min_weight] = 0.0
        x = np.round(x / min_weight) * min_weight
        x[x.sum(axis=1) == 0] = base  # all weights below the floor: keep the prior instead
        return x / x.sum(axis=1, keepdims=True)

    return _accept(draw, n, caps, min_distance)


def _accept(draw, n: int, caps: Optional[np.ndarray], min_distance: float = 0.0, max_rounds: int = 200) -> np.ndarray:
    check(n > 0, "n", n, "must be a positive number of proxies")
    kept: list[np.ndarray] = []
    for _ in range(max_rounds):
        batch = draw(max(4 * n, 64))
        if caps is not None:
            batch = batch[(batch <= caps[None, :] + 1e-9).all(axis=1)]
        for x in batch:
            if min_distance > 0 and kept and np.abs(np.array(kept) - x).sum(axis=1).min() < min_distance:
                continue
            kept.append(x)
            if len(kept) == n:
                return np.array(kept)
    raise UserError("n", n, f"only {len(kept)} distinct mixtures within the caps were found; lower n, loosen the caps or the minimum distance")


# --------------------------------------------------------------------------------------------------
# The swarm directory


@dataclass
class Swarm:
    root: Path
    domains: list[str]
    proxies: list[Proxy]
    spec: MixtureSpec = field(default_factory=MixtureSpec)
    overrides: list[str] = field(default_factory=list)
    """Overrides every proxy run gets (model size, steps, data, launcher)."""
    prior: Optional[Mixture] = None
    sizes: Optional[dict[str, float]] = None
    caps: Optional[Mixture] = None
    generator: dict[str, Any] = field(default_factory=dict)

    # ---- files
    def write(self) -> "Swarm":
        conf = self.root / "conf" / "proxy"
        conf.mkdir(parents=True, exist_ok=True)
        ids = [p.id for p in self.proxies]
        check(len(set(ids)) == len(ids), "proxies", ids, "proxy ids must be unique")
        for p in self.proxies:
            (conf / f"{p.id}.yaml").write_text(self.spec.proxy_yaml(p.weights, p.extra, comment=f"proxy {p.id} of swarm {self.root.name}"))
        lines = ["id," + ",".join(self.domains)]
        for p in self.proxies:
            lines.append(p.id + "," + ",".join(f"{p.weights.get(d, 0.0):.6g}" for d in self.domains))
        (self.root / "mixtures.csv").write_text("\n".join(lines) + "\n")
        meta = {
            "domains": self.domains, "spec": asdict(self.spec), "overrides": list(self.overrides), "prior": self.prior,
            "sizes": self.sizes, "caps": self.caps, "generator": self.generator,
            "proxies": [{"id": p.id, "weights": p.weights, "extra": p.extra} for p in self.proxies],
        }
        write_json(self.root / "swarm.json", meta)
        return self

    @classmethod
    def load(cls, root: Path | str) -> "Swarm":
        root = Path(root)
        path = root / "swarm.json"
        if not path.is_file():
            raise UserError("swarm", str(root), "is not a swarm directory (no swarm.json); create one with `assay-mix swarm`")
        meta = json.loads(path.read_text())
        return cls(
            root=root, domains=list(meta["domains"]), proxies=[Proxy(p["id"], p["weights"], p.get("extra", {})) for p in meta["proxies"]],
            spec=MixtureSpec(**meta.get("spec", {})), overrides=list(meta.get("overrides", [])), prior=meta.get("prior"),
            sizes=meta.get("sizes"), caps=meta.get("caps"), generator=meta.get("generator", {}),
        )

    # ---- status
    def run_dir(self, pid: str) -> Path:
        return self.root / "runs" / pid

    def status(self) -> dict[str, str]:
        """completed (summary.json says so), failed (a run directory without a summary), missing (never started)."""
        out = {}
        for p in self.proxies:
            d = self.run_dir(p.id)
            summary = d / "summary.json"
            if summary.is_file():
                try:
                    ok = json.loads(summary.read_text()).get("status") == "completed"
                except json.JSONDecodeError:
                    ok = False
                out[p.id] = "completed" if ok else "failed"
            else:
                out[p.id] = "failed" if d.is_dir() else "missing"
        return out

    def pending(self) -> list[str]:
        return [pid for pid, s in self.status().items() if s != "completed"]

    # ---- launch
    def command(self, ids: Sequence[str], launch_overrides: Sequence[str] = ()) -> list[str]:
        exe = os.environ.get("ASSAY_TRAIN") or str(Path(sys.executable).with_name("assay-train"))
        conf = (self.root / "conf").resolve()
        # A value a proxy sets for itself (a DDO run's steps, a validation run's seed) must not be
        # overridden by the common command line, which Hydra applies after the proxy's config.
        own = {k for p in self.proxies for k in p.extra} | {self.spec.weights_key} | set(self.spec.extra)
        common = [o for o in [*self.overrides, *launch_overrides] if o.split("=", 1)[0].lstrip("+~") not in own]
        return [
            exe, "-m", f"hydra.searchpath=[file://{conf}]", "+proxy=" + ",".join(ids),
            f"hydra.sweep.dir={(self.root / 'runs').resolve()}", "hydra.sweep.subdir=${hydra:runtime.choices.proxy}",
            "ckpt_path=last",  # a proxy killed earlier resumes in its directory (a run directory is never overwritten)
            *[o for o in common if o.split("=", 1)[0] != "ckpt_path"],
        ]

    def launch(self, launch_overrides: Sequence[str] = (), dry_run: bool = False, echo=print, shard: tuple[int, int] = (0, 1)) -> int:
        """Launch the proxies without a completed summary; ``shard=(i, k)`` launches every k-th of them
        from the i-th (k launches side by side, e.g. one per SLURM allocation or machine)."""
        status = self.status()
        i, k = shard
        check(k >= 1 and 0 <= i < k, "--shard", f"{i}/{k}", "write i/k with 0 <= i < k")
        pending = [pid for pid, s in status.items() if s != "completed"]
        todo = pending[i::k]
        done = len(status) - len(pending)
        part = f" (shard {i}/{k}: {len(todo)} of them)" if k > 1 else ""
        if done:
            echo(f"[assay-mix] {done} of {len(status)} proxies already completed; launching the other {len(pending)}{part}")
        elif k > 1:
            echo(f"[assay-mix] launching {len(todo)} of {len(pending)} proxies (shard {i}/{k})")
        if not todo:
            echo("[assay-mix] nothing to launch: every proxy has completed")
            return 0
        cmd = self.command(todo, launch_overrides)
        echo("[assay-mix] " + " ".join(shlex.quote(c) for c in cmd))
        if dry_run:
            return 0
        return subprocess.call(cmd)


def make_proxies(x: np.ndarray, domains: list[str], prefix: str = "p", extra: Optional[Sequence[Mapping[str, Any]]] = None) -> list[Proxy]:
    width = max(3, len(str(len(x) - 1)))
    return [Proxy(f"{prefix}{i:0{width}d}", as_dict(row, domains), dict(extra[i]) if extra else {}) for i, row in enumerate(x)]


def read_mixture_list(path: Path) -> list[Mixture]:
    """A given list of mixtures: JSON/YAML list of dicts, or a CSV with one column per domain."""
    if not path.is_file():
        raise UserError("--mixtures", str(path), "file does not exist")
    if path.suffix in (".csv", ".parquet"):
        import pandas as pd

        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        df = df.drop(columns=[c for c in ("id",) if c in df.columns])
        return [normalise({c: float(v) for c, v in row.items()}, f"{path.name} row {i}") for i, row in enumerate(df.to_dict("records"))]
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(path))
    if isinstance(data, dict) and "mixtures" in data:
        data = data["mixtures"]
    check(isinstance(data, list) and all(isinstance(m, dict) for m in data), "--mixtures", str(path), "must hold a list of {domain: weight} maps")
    return [normalise({str(k): float(v) for k, v in m.items()}, f"{path.name}[{i}]") for i, m in enumerate(data)]
