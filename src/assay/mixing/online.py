"""Online mixers: what a mixer reads each update, and its state (saved in every checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from assay.mixing.rules import DoReMiState, Exp3State, normalise, skill_it_weights


@dataclass
class DomainStats:
    """Per-domain statistics of the training batches since the last update (arrays over domains)."""

    loss: np.ndarray
    """Mean per-example training loss (nan where absent)."""
    count: np.ndarray
    """Examples seen per domain."""
    excess: Optional[np.ndarray] = None
    """Mean clipped excess loss max(ℓ − ℓ_ref, 0) (DoReMi; nan where absent)."""
    val_loss: Optional[np.ndarray] = None
    """Per-domain validation loss at this update (Skill-it)."""

    @property
    def present(self) -> np.ndarray:
        return self.count > 0


class Mixer:
    """An online mixer: ``update(stats)`` returns the new domain weights and what to log."""

    needs_reference = False
    needs_validation = False
    signal = "loss"
    """What the mixer's ``signals`` are, for the logs: ``mixing/<signal>/<domain>``."""

    def __init__(self, domains: list[str], initial: np.ndarray):
        self.domains, self.weights = list(domains), normalise(initial)

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:  # pragma: no cover - every mixer overrides it
        raise TypeError(f"{type(self).__name__} does not implement update()")

    def state_dict(self) -> dict:
        return {"weights": self.weights.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64)

    def outputs(self) -> dict[str, dict[str, float]]:
        """What the run reports at the end (final weights; DoReMi adds their average)."""
        return {"final_weights": dict(zip(self.domains, self.weights.tolist()))}


class DoReMiMixer(Mixer):
    needs_reference = True
    signal = "excess_loss"

    def __init__(self, domains, initial, eta: float, smoothing: float):
        super().__init__(domains, initial)
        self.eta, self.smoothing = eta, smoothing
        self.state = DoReMiState(self.weights.copy())

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
        excess = np.nan_to_num(stats.excess, nan=0.0)
        self.weights = self.state.update(excess, stats.present, self.eta, self.smoothing)
        return {"weight": self.weights, "excess_loss": self.state.scores, "average_weight": self.state.average}

    def state_dict(self) -> dict:
        s = self.state
        return {"weights": s.weights.tolist(), "scores": s.scores.tolist(), "average": s.average.tolist(), "updates": s.updates}

    def load_state_dict(self, state: dict) -> None:
        self.state = DoReMiState(np.asarray(state["weights"]), np.asarray(state["scores"]), np.asarray(state["average"]), int(state["updates"]))
        self.weights = self.state.weights

    def outputs(self) -> dict[str, dict[str, float]]:
        avg = self.state.average if self.state.updates else self.weights
        return {**super().outputs(), "average_weights": dict(zip(self.domains, avg.tolist()))}


class ODMMixer(Mixer):
    signal = "reward"

    def __init__(self, domains, initial, reward_scale: float, smoothing: Optional[float]):
        super().__init__(domains, initial)
        self.reward_scale, self.smoothing = reward_scale, smoothing
        self.state = Exp3State(self.weights.copy())

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
        share = stats.count / max(stats.count.sum(), 1)
        rewards = np.nan_to_num(stats.loss, nan=0.0) / self.reward_scale * share
        self.weights = self.state.update(rewards, stats.present, self.smoothing)
        return {"weight": self.weights, "reward": rewards, "estimated_reward": self.state.cumulative}

    def state_dict(self) -> dict:
        s = self.state
        return {"probabilities": s.probabilities.tolist(), "cumulative": s.cumulative.tolist(), "eps": s.eps, "updates": s.updates}

    def load_state_dict(self, state: dict) -> None:
        self.state = Exp3State(np.asarray(state["probabilities"]), np.asarray(state["cumulative"]), float(state["eps"]), int(state["updates"]))
        self.weights = self.state.probabilities


class SkillItMixer(Mixer):
    needs_validation = True
    signal = "val_loss"

    def __init__(self, domains, initial, graph: Optional[np.ndarray], eta: float, window: int, normalise_loss: bool, estimate: str = "given"):
        super().__init__(domains, initial)
        self.prior = self.weights.copy()
        self.graph = None if graph is None else np.asarray(graph, dtype=np.float64)
        self.estimate = estimate
        """Where the graph came from: ``given``, ``training``, ``gradient_probe`` or ``identity``."""
        self.graph_info: dict = {}
        """What the estimate reports with the graph (the training estimate: its losses and cache key)."""
        self.eta, self.window, self.normalise_loss = eta, window, normalise_loss
        self.losses: list[np.ndarray] = []
        self.first: Optional[np.ndarray] = None

    def update(self, stats: DomainStats) -> dict[str, np.ndarray]:
        loss = np.asarray(stats.val_loss, dtype=np.float64)
        if self.first is None:
            self.first = loss.copy()
        # normalise_loss: L_t / L_0 per skill (the released code's ``--normalize_loss``)
        self.losses.append(loss / self.first if self.normalise_loss else loss)
        graph = np.eye(len(self.domains)) if self.graph is None else self.graph
        self.weights = skill_it_weights(self.prior, graph, self.losses, self.eta, self.window)
        return {"weight": self.weights, "val_loss": loss}

    def state_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "losses": [x.tolist() for x in self.losses],
                "first": None if self.first is None else self.first.tolist(), "graph": None if self.graph is None else self.graph.tolist(),
                "estimate": self.estimate, "graph_info": self.graph_info}

    def load_state_dict(self, state: dict) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.losses = [np.asarray(x) for x in state["losses"]]
        self.first = None if state["first"] is None else np.asarray(state["first"])
        if state.get("graph") is not None:
            self.graph = np.asarray(state["graph"])
        self.estimate = state.get("estimate", self.estimate)
        self.graph_info = dict(state.get("graph_info") or {})

    def outputs(self) -> dict[str, dict[str, float]]:
        out = super().outputs()
        if self.graph is not None:
            out["graph"] = {d: dict(zip(self.domains, row)) for d, row in zip(self.domains, self.graph.tolist())}
        out["graph_estimate"] = {"estimate": self.estimate, **self.graph_info}
        return out
