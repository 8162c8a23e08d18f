"""Online mixers (config group ``mixture``): the sampler draws every batch's domains by weights that a
callback updates during training from per-domain losses.

    assay-train mixture=doremi_resample mixture.reference=<reference run dir>   # DoReMi-style resampling (not the recipe)
    assay-train mixture=odm                                            # ODM, EXP3 bandit (Albalak et al. 2023)
    assay-train mixture=skill_it                                       # Skill-it (Chen et al. 2023)

Each writes ``mixing.csv`` (weights and signals at every update), ``mixing.json`` (final weights;
doremi_resample also their average) and logs ``mixing/weight/<domain>``; the
mixer state is in every checkpoint, so a resumed run continues bit-identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.data.mixture import MixtureConfig
from assay.data.weights import check_weights, normalise_shares
from assay.errors import UserError, check
from assay.data.weights import temperature_weights
from assay.registry import register

INITS = ("uniform", "natural", "temperature", "weights")


@dataclass
class OnlineMixture(MixtureConfig):
    update_every: int = 10
    """Optimizer steps between weight updates."""
    warmup_steps: int = 0
    """No update before this step (ODM's released runs wait 2,000 steps at scale)."""
    init: str = "uniform"
    """Initial weights: ``uniform``, ``natural`` (pool shares), ``temperature`` (``init_temperature``)
    or ``weights`` (``init_weights``)."""
    init_temperature: float = 2.0
    init_weights: dict[str, float] = field(default_factory=dict)
    drawn: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.update_every > 0, "mixture.update_every", self.update_every, "must be a positive number of steps")
        check(self.warmup_steps >= 0, "mixture.warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.init in INITS, "mixture.init", self.init, f"must be one of {list(INITS)}")
        check(self.init_temperature > 0, "mixture.init_temperature", self.init_temperature, "must be > 0")
        if self.init == "weights":
            check(len(self.init_weights) > 0, "mixture.init_weights", {}, "mixture.init=weights needs the weights")
            check_weights("mixture.init_weights", self.init_weights)

    def named_domains(self) -> list[str]:
        return sorted(set(self.max_epochs) | set(self.init_weights))

    def check_domains(self, domains: list[str], where: str = "data") -> None:
        for name in self.named_domains():
            if name not in domains:
                field_ = "mixture.max_epochs" if name in self.max_epochs else "mixture.init_weights"
                raise UserError(field_, name, f"is not a domain of this data; domains are {sorted(domains)}")

    def weights_at(self, progress: float, sizes: dict[str, float]) -> dict[str, float]:
        names = list(sizes)
        if self.init == "uniform":
            return {s: 1.0 / len(names) for s in names}
        if self.init == "natural":
            return normalise_shares(dict(sizes))
        if self.init == "temperature":
            return dict(zip(names, temperature_weights(np.array([sizes[s] for s in names], dtype=np.float64), self.init_temperature).tolist()))
        return normalise_shares({s: float(self.init_weights.get(s, 0.0)) for s in names})

    def mixer(self, domains: list[str], initial: np.ndarray):  # pragma: no cover - every mixer overrides it
        raise TypeError(f"{type(self).__name__} does not build a mixer()")


@register("mixture", "doremi_resample")
@dataclass
class DoReMiResampleMixture(OnlineMixture):
    """DoReMi's weight update used to resample batches (not the authors' recipe: see mixture=doremi); excess loss clipped per example.

    Differs from the released recipe (``assay.mixing.doremi``) in three ways, named here so results
    produced with it are not read as DoReMi's: batches are *drawn* by the current weights instead of
    reweighting the loss of batches drawn from the reference weights; the excess loss is clipped per
    example (mean over the example's tokens first) instead of per token; and the reference losses are
    cached per example. A domain whose weight falls near the smoothing floor is then hardly ever
    drawn and its excess loss goes stale, which can swing the weights between near one-hot states.
    """

    card: ClassVar[MethodCard] = MethodCard(
        paper="Xie et al. 2023, DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining (NeurIPS 2023); "
              "this option is not the paper's recipe (that is mixture=doremi)",
        arxiv="2305.10429",
        code="sangmichaelxie/doremi: doremi/trainer.py (update_domain_weights: the same exponentiated-gradient step and smoothing)",
        defaults={
            "eta": "1 (paper: 1): follows",
            "smoothing": "1e-3 (run scripts' reweight_eps): follows",
            "update_every": "10 (the recipe updates every step)",
        },
        deviations=(
            "Batches are drawn by the current weights instead of reweighting the loss of batches drawn from the reference "
            "weights: a domain whose weight nears the smoothing floor is hardly ever drawn and its score goes stale.",
            "The excess loss is clipped per example (the example's mean over tokens first), not per token.",
            "The model trained is the run's own model on unweighted loss (no separate proxy); its average weights are in "
            "mixing.json but no fresh run on them is made.",
            "The reference losses are computed once per example and cached rather than per token on each batch.",
        ),
        checked="tests/unit/mixing/test_mixing_rules.py: the update against hand-derived numbers; "
                "tests/integration/test_mixing_runs.py: a run against a reference run",
        notes="Kept so the wave-two online_mixing numbers (produced with it under the name doremi) stay reproducible.",
    )

    name: str = "doremi_resample"
    reference: Optional[str] = None
    """The reference run's directory (trained on the reference weights, e.g. ``mixture=single``);
    its per-example losses on this run's training examples are computed once and cached."""
    eta: float = 1.0
    """Step size η of the exponentiated-gradient update (the paper's and the run scripts' 1)."""
    smoothing: float = 1e-3
    """c in α ← (1 − c)·α + c/k (run scripts ``--reweight_eps 1e-3``; the argument default is 1e-4)."""
    needs_reference_run: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reference is not None and str(self.reference) != "", "mixture.reference", self.reference, "DoReMi needs a reference run directory (train one first, e.g. with mixture=single)")
        check(self.eta > 0 and math.isfinite(self.eta), "mixture.eta", self.eta, "must be a finite number > 0")
        check(0.0 <= self.smoothing <= 1.0, "mixture.smoothing", self.smoothing, "must be in [0, 1]")

    def mixer(self, domains, initial):
        from assay.mixing.online import DoReMiMixer

        return DoReMiMixer(domains, initial, self.eta, self.smoothing)


@register("mixture", "odm")
@dataclass
class ODMMixture(OnlineMixture):
    """ODM: online data mixing as a multi-armed bandit, EXP3 with the training loss as reward (Albalak et al. 2023)."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Albalak et al. 2023, Efficient Online Data Mixing For Language Model Pre-Training (ODM)",
        arxiv="2312.02406",
        code="alon-albalak/online-data-mixing: megatron/data/data_sampling_utils.py (Exp3WeightUpdater): its update arithmetic "
             "and reward / 10 read and transcribed in the test",
        defaults={
            "reward_scale": "10 (the released code divides the loss by 10): follows",
            "smoothing": "null, cumulative importance-weighted rewards (the released code): follows the code; α = 0.9 is the "
                         "moving average of DataFlex's port",
            "warmup_steps": "0 (DataFlex's port: 2,000 steps; the released runs' value not checked): differs: toy runs are short",
        },
        deviations=(
            "One update per update_every steps over every domain seen since the last one, each reward weighted by the domain's "
            "share of the batch; the released code updates one dataset per call with its own batch's loss.",
        ),
        checked="tests/unit/mixing/test_mixing_rules.py: EXP3 by hand and against a transcription of the released update over "
                "60 steps; the reward is the scaled loss times the batch share",
    )

    name: str = "odm"
    reward_scale: float = 10.0
    """Rewards are losses / this (the released code divides by 10)."""
    smoothing: Optional[float] = None
    """null: cumulative importance-weighted rewards (the released code); α in [0, 1): the paper's moving
    average R̂ ← α·R̂ + (1 − α)·r/π (DataFlex uses 0.9)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.reward_scale > 0, "mixture.reward_scale", self.reward_scale, "must be > 0")
        if self.smoothing is not None:
            check(0.0 <= self.smoothing < 1.0, "mixture.smoothing", self.smoothing, "must be in [0, 1) (or null)")

    def mixer(self, domains, initial):
        from assay.mixing.online import ODMMixer

        return ODMMixer(domains, initial, self.reward_scale, self.smoothing)


@register("mixture", "skill_it")
@dataclass
class SkillItMixture(OnlineMixture):
    """Skill-it: weights from a skills graph times recent per-skill validation losses (Chen et al. 2023).

    The graph is learned as the authors learn it (``graph_estimate=training``, ``assay.mixing.skill_graph``):
    from the run's starting model, a short run on each skill alone, A_ij = the relative decrease of
    skill j's validation loss, clipped at 0; cached per starting model under
    ``$ASSAY_CACHE/skill_graphs/``. ``gradient_probe`` is the cheaper first-order probe assay used
    before (not the authors'); ``identity`` has no edges; an explicit ``graph`` wins over all three."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Chen et al. 2023, Skill-it! A Data-Driven Skills Framework for Understanding and Training Language Models (NeurIPS 2023)",
        arxiv="2307.14430",
        code="HazyResearch/skill-it: trainer/mw_trainer.py (the update, --mw_window, --normalize_loss), scripts/*/skillit.sh and "
             "ni_graphs/*.npy (the learned graphs); the graph learning is not in that repository (its README: 'Code for learning "
             "the skills graph is not provided'), so it was checked against HazyResearch/aioli: mixing_law_fitting.py "
             "(skills_graph), scripts/*/skillit/graph_learning.sh and skillit_graphs/*_normalized_seed_*.npy",
        defaults={
            "graph_estimate": "training: one short run per skill from the starting model, A_ij = max(0, (L_j before - L_j after "
                              "training on i) / L_j before), diagonal measured (Aioli's skills_graph; the clipping inferred from the "
                              "exact zeros of skill-it's ni_graphs/*.npy): follows",
            "graph_steps": "20 optimizer steps per skill. Aioli's graph runs are T/(2k) steps long for a T-step main run over k "
                           "skills (2,857 = 40,000 / 14); for the online_mixing study (T = 200, k = 5) that is 20: follows that "
                           "ratio at the study's scale; the paper's own h is not in the released code (not verified)",
            "eta": "0.8 (released scripts: 0.5 LEGO, 0.1 addition, 0.8 Spanish QG, 0.5 stance detection, 0.2 NI): follows the "
                   "Spanish QG fine-tuning script",
            "window": "3 (--mw_window default 3; every released script): follows",
            "update_every": "50 (released: 1,000-1,200 of 6,000 steps for the synthetics, 100 of 600 for NI fine-tuning, i.e. "
                            "T/6-T/5): differs: more frequent; the online_mixing study uses 20 of 200 (T/10)",
            "normalise_loss": "true (--normalize_loss is off in every released script): differs: assay's earlier default, kept so "
                              "the online_mixing runs stay reproducible; set false for the released scripts' raw losses",
            "probe_examples": "64 validation examples per skill in every evaluation (the released evaluator uses the whole "
                              "validation set): differs: cost on a 2-core machine",
        },
        deviations=(
            "The graph is learned from this run's own starting model (its weights at the first step), once per run unless the "
            "cache holds it; the authors' graph runs are separate runs from the same kind of initial model (Aioli: from scratch, "
            "like its main runs). The short runs draw skill i's examples of the run's training split (before any selection "
            "the run applies), cycled over epochs when the skill has fewer than graph_steps x batch_size.",
            "Each short run is a run of its own of graph_steps steps with the run's AdamW settings, gradient clipping, schedule "
            "and warm-up steps (Aioli's graph runs share the main runs' --lr, --lr_scheduler and --warmup_steps): where "
            "optim.warmup_steps >= graph_steps (the online_mixing study: 50 vs 20) every short run stays in warm-up, at most "
            "graph_steps/warmup of the peak learning rate, and the graph's entries are smaller; lower optim.warmup_steps or "
            "raise graph_steps for a graph at the peak rate. The short runs use the model's own dtype without the run's "
            "autocast and their own seeded random state (the run's is untouched).",
            "Negative changes are clipped to 0; Aioli's skills_graph does not clip (its graphs have no negative entry) and "
            "whether the paper thresholds small decreases too is not in any released file (not verified).",
            "The paper's text (Sections 2-3, the graph-learning appendix) was not re-read for this card: the definition follows "
            "the authors' released code and graphs.",
            "Before the first update the weights are the prior (init); the released code starts from p0 x exp(eta x A x 1), "
            "i.e. already weighted by A's row sums.",
            "A graph given by hand is used as given; the released code maps an off-diagonal 1 to 0.5 (its synthetic graphs).",
        ),
        checked="tests/unit/mixing/test_skill_graph.py: A from loss matrices by hand, a planted two-block structure recovered "
                "by the short runs, the cache hit and miss; tests/unit/mixing/test_mixing_rules.py: the update by hand; "
                "tests/integration/test_mixing_runs.py: runs with the learned graph and with the gradient probe",
        notes="graph_estimate=gradient_probe is the first-order probe earlier assay runs used (experiments/online_mixing's "
              "skill_it numbers): A_ij = clip(<g_i, h_j> / <g_j, h_j>, 0, 1) at the starting model, diagonal 1; a different "
              "scale and not the paper's estimate. The training estimate costs k x graph_steps extra optimizer steps once per "
              "starting model.",
    )

    name: str = "skill_it"
    update_every: int = 50
    eta: float = 0.8
    """η of the multiplicative-weights update (the released synthetic runs use 0.5-0.8)."""
    window: int = 3
    """Evaluations whose losses are summed (``--mw_window``)."""
    graph: list[Any] = field(default_factory=list)
    """The skills graph A as rows over the domains in sorted order (A_ij > 0: training on i helps
    j), e.g. ``[[1,0.5],[0,1]]``; empty = estimate it at the start (``graph_estimate``)."""
    graph_estimate: str = "training"
    """With no graph given: ``training`` (the authors': a short run on each skill from the starting model,
    A_ij = relative decrease of skill j's validation loss, clipped at 0; cached per starting model),
    ``gradient_probe`` (a cheaper first-order probe, one gradient per skill: not the authors') or
    ``identity`` (no edges)."""
    graph_steps: int = 20
    """Optimizer steps of each skill's short run (``graph_estimate=training``)."""
    probe_examples: int = 64
    """Examples per domain in every validation-loss evaluation (and in the gradient probe)."""
    normalise_loss: bool = True
    """Divide each skill's loss by its first evaluation's (``--normalize_loss``)."""

    ESTIMATES: ClassVar[tuple[str, ...]] = ("training", "gradient_probe", "identity")
    moved_keys: ClassVar[dict[str, str]] = {
        "probe": "mixture.graph_estimate=<training|gradient_probe|identity> (probe=true was gradient_probe, "
                 "probe=false identity; the default, training, is the authors' estimate)",
    }
    """The former probe flag, now one of the graph's estimates."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.eta > 0, "mixture.eta", self.eta, "must be > 0")
        check(self.window > 0, "mixture.window", self.window, "must be a positive number of evaluations")
        check(self.probe_examples > 0, "mixture.probe_examples", self.probe_examples, "must be a positive integer")
        check(self.graph_estimate in self.ESTIMATES, "mixture.graph_estimate", self.graph_estimate, f"must be one of {list(self.ESTIMATES)}")
        check(isinstance(self.graph_steps, int) and self.graph_steps > 0, "mixture.graph_steps", self.graph_steps, "must be a positive number of optimizer steps")
        if self.graph:
            rows = [list(r) for r in self.graph]
            ok = all(len(r) == len(rows) for r in rows) and all(isinstance(x, (int, float)) and x >= 0 for r in rows for x in r)
            check(ok, "mixture.graph", rows, "must be a square matrix of non-negative numbers (one row and column per domain)")

    def graph_source(self) -> str:
        """Where the graph comes from: ``given`` or the estimate."""
        return "given" if self.graph else self.graph_estimate

    def graph_for(self, domains: list[str]) -> Optional[np.ndarray]:
        """The graph known before training (given, or the identity); None = estimate it at the start."""
        if not self.graph:
            return np.eye(len(domains)) if self.graph_estimate == "identity" else None
        g = np.asarray([list(r) for r in self.graph], dtype=np.float64)
        if g.shape != (len(domains), len(domains)):
            raise UserError("mixture.graph", [list(r) for r in self.graph], f"must be {len(domains)}x{len(domains)}, one row and column per domain {domains}")
        return g

    def mixer(self, domains, initial):
        from assay.mixing.online import SkillItMixer

        return SkillItMixer(domains, initial, self.graph_for(domains), self.eta, self.window, self.normalise_loss, estimate=self.graph_source())
