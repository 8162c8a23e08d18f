"""Projektor (Kang, Just, Sahu, Jia, NeurIPS 2023, arXiv 2307.02460): performance of a mixture of data
sources projected from partial samples, in two stages, and the mixture chosen by its gradient.

Stage 1, at each pilot size N_k. The mixture p ∈ Δ_m is represented by the sources' pilot samples
S_i (n_i embedded examples each) as one weighted empirical measure, mass p_i/n_i on every point of
S_i, and its entropic OT distance to the target set D_val (uniform) is computed with assay.ot. The
loss is regressed on the pseudo-quadratic model of the authors' notebook, by ordinary least squares:

    L̂(N_k, p) = c₀ + Σ_{i<m} c₁ⁱ pᵢ + (b₀ + Σ_{i<m} (b₁ⁱ pᵢ + b₂ⁱ pᵢ²)) · OT(p, D_val)

(design columns [1, OT, p_i, p_i·OT, p_i²·OT] for i < m; the last source is the reference, since
Σ p = 1 makes its own columns collinear; the notebook has no c₂ pᵢ² column, and neither has this).

Stage 2, parameter-free extrapolation in log N: with fits at two pilot sizes N₀ < N₁,

    L̂(N, p) = [log(N/N₀)·L̂(N₁, p) − log(N/N₁)·L̂(N₀, p)] / log(N₁/N₀),

the line through the two fits in log N. With more pilot sizes the line is the least-squares line in
log N through all of them (the same formula for two). With one pilot size there is no line: the fit
predicts at that size and refuses another.

The gradient. The entropic OT value is the dual value OT_ε(a) = ⟨a, f⟩ + ⟨b, g⟩ at the optimal
potentials (in the form P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε)), and its derivative in the mass
a_j is exactly f_j (envelope theorem: the marginal term vanishes at the optimum). With a_j = p_i/n_i
on S_i, ∂OT/∂p_i = mean_{j ∈ S_i} f_j, the pool-side potential on the points of source i. A source
with p_i = 0 has no mass in the solve; its points get f by the soft c-transform of g (assay.ot), the
same potential the solve would give them. Then

    ∂L̂/∂pᵢ = [c₁ⁱ + (b₁ⁱ + 2b₂ⁱpᵢ)·OT]_{i<m} + (b₀ + Σ_{k<m}(b₁ᵏpₖ + b₂ᵏpₖ²)) · ∂OT/∂pᵢ,

combined over pilot sizes with the same log-N weights. The proposer ``projektor`` descends it
(ascends, for a metric to raise) with the paper's step d_t = lr·0.9^t for 100 steps, each projected
onto the (capped) simplex, from the prior.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.mixsearch.mixture import project_capped_rows
from assay.mixsearch.pilots import PILOT_SIZE, REG, MixtureOT, Pilots, load_pilots, embed_pilots, mixture_ot
from assay.mixsearch.regressors.base import Regressor

SIZE_RTOL = 1e-6
"""Runs whose data quantities differ by less than this (relative) are one pilot size."""


# --------------------------------------------------------------------------------------------------
# The regressor


def log_n_weights(sizes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(rows, K) weights w_k(N) with L̂(N, p) = Σ_k w_k(N)·L̂(N_k, p): the least-squares line in log N
    through the pilot sizes N_k; for two sizes the paper's [log(N/N₀)·L̂₁ − log(N/N₁)·L̂₀]/log(N₁/N₀)."""
    u_k = np.log(np.asarray(sizes, float))
    u = np.log(np.asarray(scale, float))[:, None]
    c = u_k - u_k.mean()
    return 1.0 / len(u_k) + (u - u_k.mean()) * c[None, :] / (c @ c)


class ProjektorLaw(Regressor):
    """Projektor: the pseudo-quadratic model in the mixture and its OT distance to the target, per pilot
    size, extrapolated linearly in log N."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Kang, Just, Sahu, Jia 2023, Performance Scaling via Optimal Transport: Enabling Data Selection from Partially "
              "Revealed Sources (NeurIPS 2023)",
        arxiv="2307.02460",
        code="reds-lab/projektor@6da679f (projektor_cifar10_example.ipynb: the design matrix [OT, p₁, p₂, p₁·OT, p₂·OT, p₂²·OT, "
             "p₁²·OT] + intercept fitted by LinearRegression; prep_train_data.py: the OTDD distance) and "
             "anitksahu/projektor_multimodal@cbbbae0 (projektor/projector.py: Projector.project_performance, the log-N formula), "
             "as the research note and the fork's source read",
        defaults={
            "design": "[1, OT, p_i, p_i·OT, p_i²·OT] for i < m, OLS (notebook, 3 sources: the same columns): follows",
            "predict": "linear in log N between two pilot sizes (paper eq.): follows; the least-squares line for more sizes",
            "reg": "1e-2 relative to the mean ground cost (OTDD: entropic 1e-2 absolute on its features): follows in value",
            "pilots": f"{PILOT_SIZE} examples per source when a swarm's pilots are embedded (paper: 1,000 / 1,500 in all): differs",
        },
        deviations=(
            "The mixture is one weighted measure over the sources' pilot samples (mass p_i/n_i on each point of source i), not a "
            "resampled dataset D(N, p) of N points: the OT distance is a smooth function of p and does not depend on N (the "
            "per-size coefficients carry N).",
            "Feature-only OT on text embeddings (MiniLM by default, or any .npz of embeddings), squared Euclidean cost / 2; the "
            "paper's OTDD adds a label term (λ_y = 1) that text without classes has no use for.",
            "Entropic OT value ⟨a, f⟩ + ⟨b, g⟩, not debiased (the paper's OTDD runs use the debiased Sinkhorn divergence): its "
            "derivative in the masses is exactly the potential f, which the gradient uses.",
            "The target is a loss to minimise, regressed directly (the notebook regresses accuracy); the log-N line is applied "
            "to the loss as the paper applies it to accuracy.",
            "With one pilot size the fit predicts at that size only (no extrapolation) and refuses another.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_projektor.py: OLS recovers known coefficients of the pseudo-quadratic "
                "model on toy pilots; the log-N formula by hand; the OT gradient against finite differences; the proposal "
                "reaches the known optimum of a toy; a source without pilots is one line; fit/propose/validate through the CLI",
        notes="Needs the sources' pilot samples (assay-mix fit|propose --pilots FILE.npz, or a swarm directory, whose pool is "
              "embedded once into <swarm>/pilots.npz). One Sinkhorn solve per mixture: propose with --proposer projektor.",
    )

    name = "projektor"
    uses_scale = True
    needs = "the sources' pilot samples (--pilots, or a swarm directory)"
    batch_predict = False

    def __init__(self, seed: int = 0, pilots: Optional[Pilots] = None, domains: Optional[Sequence[str]] = None, reg: float = REG):
        super().__init__(seed)
        self.ot: Optional[MixtureOT] = mixture_ot(pilots, domains, reg) if pilots is not None else None

    def n_params(self, m: int) -> int:
        return 3 * m - 1

    def prepare(self, table: Any) -> None:
        path = table.meta.get("pilots")
        root = table.meta.get("root")
        if path is None and root and (Path(root) / "swarm.json").is_file():
            path = Path(root) / "pilots.npz"
            if not path.is_file():
                from assay.mixsearch.swarm import Swarm

                print(f"[assay-mix] projektor: embedding {PILOT_SIZE} pilot examples per source and the validation split into {path}", flush=True)
                embed_pilots(Swarm.load(root).overrides, table.domains).save(path)
        if path is None:
            raise UserError("--pilots", None, "projektor needs the sources' pilot samples: give --pilots FILE.npz (arrays pilot_<source> "
                                              "and target), or fit on a swarm directory (its pool is embedded)")
        self.ot = mixture_ot(load_pilots(Path(path)), table.domains)

    # ---- the model at one pilot size
    @staticmethod
    def design(X: np.ndarray, ot: np.ndarray) -> np.ndarray:
        """Columns [1, OT, p_i, p_i·OT, p_i²·OT] for i < m (the last source is the reference)."""
        P = np.asarray(X, float)[:, :-1]
        o = np.asarray(ot, float)[:, None]
        return np.hstack([np.ones_like(o), o, P, P * o, P**2 * o])

    def _ot(self, X: np.ndarray) -> np.ndarray:
        check(self.ot is not None, "--regressor", self.name, "needs the sources' pilot samples (--pilots)")
        return self.ot.values(X)

    def fit(self, X, y, scale=None):
        X, y = np.asarray(X, float), np.asarray(y, float)
        n, m = X.shape
        ot = self._ot(X)
        self.sizes, group = self._group(scale, n)
        coef = []
        for k, size in enumerate(self.sizes):
            rows = group == k
            need = self.n_params(m) + 1
            check(rows.sum() >= need, "--regressor", self.name,
                  f"needs at least {need} proxies at every pilot size for {m} sources; size {size:g} has {int(rows.sum())}")
            coef.append(np.linalg.lstsq(self.design(X[rows], ot[rows]), y[rows], rcond=None)[0])
        self.coef = np.array(coef)
        return self

    def _group(self, scale, n: int) -> tuple[list, np.ndarray]:
        if scale is None:
            return [float("nan")], np.zeros(n, dtype=int)
        s = np.asarray(scale, float)
        sizes: list[float] = []
        group = np.empty(n, dtype=int)
        for i, v in enumerate(s):
            for k, u in enumerate(sizes):
                if abs(v - u) <= SIZE_RTOL * u:
                    group[i] = k
                    break
            else:
                sizes.append(float(v))
                group[i] = len(sizes) - 1
        order = np.argsort(sizes)
        return [sizes[k] for k in order], np.argsort(order)[group]

    def _weights(self, scale, n: int) -> np.ndarray:
        """(n, K) log-N weights of the per-size fits at the requested data quantities."""
        K = len(self.sizes)
        if scale is None:
            # no quantity asked: the largest pilot size
            return np.tile(np.eye(K)[-1], (n, 1))
        s = np.broadcast_to(np.asarray(scale, float), (n,))
        if K == 1:
            size = self.sizes[0]
            off = np.flatnonzero(~(np.abs(s - size) <= SIZE_RTOL * size)) if size == size else np.arange(0)
            if off.size:
                raise UserError("--scale", float(s[off[0]]), f"projektor was fitted at one pilot size ({size:g}); extrapolating in log N "
                                                             "needs proxies at two sizes at least (the paper: 1,000 and 1,500)")
            return np.ones((n, 1))
        return log_n_weights(np.array(self.sizes), s)

    def predict(self, X, scale=None):
        X = np.asarray(X, float)
        w = self._weights(scale, len(X))
        per_size = self.design(X, self._ot(X)) @ self.coef.T  # (n, K)
        return (w * per_size).sum(axis=1)

    def gradient(self, x: np.ndarray, scale: Optional[float] = None) -> np.ndarray:
        """∂L̂(N, p)/∂p_i of every source at the mixture x (module docstring)."""
        x = np.asarray(x, float)
        m = len(x)
        ot, dot = self.ot(x)
        w = self._weights(None if scale is None else np.array([scale]), 1)[0]
        grad = np.zeros(m)
        for wk, c in zip(w, self.coef):
            b0, c1, b1, b2 = c[1], c[2 : m + 1], c[m + 1 : 2 * m], c[2 * m :]  # c[0], the intercept, has no gradient
            P = x[:-1]
            g = np.zeros(m)
            g[:-1] = c1 + (b1 + 2 * b2 * P) * ot
            g += (b0 + b1 @ P + b2 @ P**2) * dot
            grad += wk * g
        return grad

    def params(self):
        out = {}
        for size, c in zip(self.sizes, self.coef):
            m = (len(c) + 1) // 3
            out[f"N={size:g}"] = {"c0": float(c[0]), "b0": float(c[1]), "c1": c[2 : m + 1].tolist(), "b1": c[m + 1 : 2 * m].tolist(),
                                  "b2": c[2 * m :].tolist()}
        return {"sizes": self.sizes, "reference_source": "last", "per_size": out, "eps": None if self.ot is None else self.ot.eps}


# --------------------------------------------------------------------------------------------------
# The proposer


def project_capped(v: np.ndarray, caps: Optional[np.ndarray]) -> np.ndarray:
    """Euclidean projection onto {0 <= x <= cap, Σx = 1} (the fork's project_onto_simplex when no caps)."""
    return project_capped_rows(np.asarray(v, float)[None, :], np.ones(len(v)) if caps is None else np.asarray(caps, float))[0]


class ProjektorGradient:
    """Projected gradient descent of a Projektor fit on the (capped) simplex, with the paper's decaying step."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Kang, Just, Sahu, Jia 2023, Performance Scaling via Optimal Transport (NeurIPS 2023): gradient-based source "
              "selection from the projected performance",
        arxiv="2307.02460",
        code="anitksahu/projektor_multimodal@cbbbae0 (projektor/projector.py: OptimalDataSourceSelector, project_onto_simplex); "
             "reds-lab/projektor@6da679f's notebook (its optimisation cell)",
        defaults={
            "lr": "5e-4 (paper and fork): follows (assay-mix propose --lr)",
            "decay": "0.9 per step (d_t = lr·0.9^t): follows",
            "iterations": "100: follows",
        },
        deviations=(
            "∂OT/∂p_i is the mean pool-side potential on source i's pilots, exact for the weighted-measure mixture; the paper's "
            "calibrated form (1/n_i)[Σ_{S_i} f − n_i/(N − n_i)·Σ_{others} f] is its counterpart for a resampled set. Both are "
            "unchanged by a constant shift of f, and the projection removes the common part.",
            "Every step is projected onto the simplex under the repetition caps (the fork projects onto the simplex; the "
            "notebook does not project and steps with the N₀-only gradient, a slip the research note names).",
            "Starts at the prior (natural unless --prior); minimises a loss (ascends with --maximize).",
            "The total movement is at most 10·lr·‖∇‖ (Σ_t 0.9^t = 10): at the paper's lr a loss-scale target barely moves the "
            "prior; the step is a CLI option (--lr) and a study states the one it uses.",
        ),
        checked="tests/unit/mixsearch/test_mixsearch_projektor.py: reaches the known optimum of a toy fit; binding caps; "
                "other regressors refused",
    )

    name = "projektor"
    lr = 5e-4
    """Initial step d_0 (``assay-mix propose --lr``)."""
    decay = 0.9
    iterations = 100

    @staticmethod
    def run(model: Regressor, prior: np.ndarray, caps: Optional[np.ndarray], *, kl: float, n_samples: int, top_k: int,
            strength: float, seed: int, scale: Optional[float], maximize: bool, lr: float) -> np.ndarray:
        if not isinstance(model, ProjektorLaw):
            raise UserError("--proposer", "projektor", f"follows the OT dual gradient of a projektor fit; regressor {model.name} has none "
                                                       "(use simulation or optimize)")
        sign = 1.0 if maximize else -1.0
        p = project_capped(prior, caps)
        for t in range(ProjektorGradient.iterations):
            p = project_capped(p + sign * lr * ProjektorGradient.decay**t * model.gradient(p, scale), caps)
        return p
