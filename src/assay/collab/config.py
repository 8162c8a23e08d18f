"""The ``collab`` config group: several private clients trained together (CLUES's setting).

Zhao et al., "CLUES: Collaborative Private-domain High-quality Data Selection for LLMs via Training
Dynamics" (NeurIPS 2024): every client (data silo) holds mixed-quality private data; all share a
public trusted anchor / validation set. Phase 1 scores every client's examples against the public
set and keeps those at least as good as a global threshold derived from the anchor scores; phase 2
trains one model on what was kept, by federated averaging or by merging adapters.

The scorer and its selector are the run's ``selection`` group (``selection=clues``,
``selection=el2n selection/selector=anchor_quantile``, ``selection=perplexity selection/selector=top
selection.selector.fraction=0.6``, ...); this group says who the clients are and how they collaborate.
Nothing here imports Flower: composing and validating a config stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from assay.errors import check

MODES = ("fedavg", "merge", "local")
MERGES = ("linear", "ties")


@dataclass
class CollabConfig:
    name: str = "collab"
    """Preset name (what ``assay-compare`` groups by)."""
    partition_by: str = "source"
    """Column of the training pool that splits it into clients (``source`` = one skill / domain per
    client: the non-IID split of CLUES, one language or specialty per silo)."""
    clients: list[str] = field(default_factory=list)
    """The partition values, one per client, in client order; empty = every value present, sorted."""
    num_clients: Optional[int] = None
    """How many clients; null = one per listed (or present) partition value. More than the
    partitions is refused."""
    corruption: list[float] = field(default_factory=list)
    """Share of each client's completions replaced by low-quality text (``noise=corrupt``'s kinds),
    in client order, each in [0, 1); empty = clean clients. CLUES's setting: silos of different quality."""
    corruption_kinds: list[str] = field(default_factory=lambda: ["shuffle", "wrong_answer", "truncate"])
    rounds: int = 3
    """Collaborative training rounds of phase 2 (FedAvg rounds; for ``merge`` and ``local`` the
    clients train ``rounds x local_steps`` steps on their own)."""
    local_steps: int = 10
    """Optimizer steps each sampled client takes per round (fresh AdamW every round, as in FedAvg)."""
    local_schedule: str = "constant"
    """Learning-rate schedule over one round's local steps (``optim.lr`` at its peak, no warm-up;
    ``constant``, ``linear`` or ``cosine``): every round restarts the clients' optimizers, so the
    single-site ``optim.schedule`` / ``warmup_steps`` over ``trainer.max_steps`` do not apply."""
    fraction_train: float = 1.0
    """Share of the clients sampled per round (Flower FedAvg's ``fraction_train``), in (0, 1]."""
    mode: str = "fedavg"
    """``fedavg``: federated averaging of the trainable parameters (all weights, or only the LoRA
    adapters with model.lora.r>0), weighted by each client's example count (McMahan et al. 2017,
    arXiv 1602.05629). ``merge``: each client trains its own adapter once, the server merges them
    with PEFT's ``add_weighted_adapter`` (CLUES's model-merging route). ``local``: no collaboration,
    every client trains alone (the baseline); the reported metrics are means over the clients' models."""
    merge_method: str = "ties"
    """``linear`` or ``ties`` (Yadav et al. 2023, arXiv 2306.01708: trim to ``density``, elect signs,
    disjoint mean), for mode=merge. CLUES merges with TIES at density 0.2 and equal weights."""
    density: float = 0.2
    """Share of each adapter's entries TIES keeps, in (0, 1]."""
    warmup_rounds: int = 1
    """Phase 1 warm-up: FedAvg rounds of ``local_steps`` on all client data before scoring. The global
    model after each warm-up round, with the clients' Adam moments averaged by example count, is one
    checkpoint of the TracIn-CP sum CLUES / LESS score with; every party (clients for their examples,
    the server for the anchors) scores with the same checkpoints, so the anchor threshold is on the
    clients' scale. 0 = score with the initial global model (plain gradients, one checkpoint)."""
    oracle: bool = False
    """Keep exactly the examples without a ground-truth noise flag (the clean-data upper bound)."""
    cpus: int = 1
    """CPUs of the simulation engine (Ray) and per client: clients then run one after the other."""
    eval_every_round: bool = True
    """Validate the global model on the public val split after every round (exact match + loss)."""
    prepare_only: bool = False
    """Write the run directory (config, base model, tokenizer) and stop: what a Flower deployment
    (``flwr run``, SuperLink + SuperNodes) reads; see the README."""

    def __post_init__(self) -> None:
        check(self.mode in MODES, "collab.mode", self.mode, f"must be one of {list(MODES)}")
        check(self.merge_method in MERGES, "collab.merge_method", self.merge_method, f"must be one of {list(MERGES)}")
        check(self.local_schedule in ("constant", "linear", "cosine"), "collab.local_schedule", self.local_schedule, "must be one of ['constant', 'linear', 'cosine']")
        check(self.rounds >= 1, "collab.rounds", self.rounds, "must be a positive integer (collaborative training rounds)")
        check(self.local_steps >= 1, "collab.local_steps", self.local_steps, "must be a positive integer")
        check(self.warmup_rounds >= 0, "collab.warmup_rounds", self.warmup_rounds, "must be >= 0")
        check(0.0 < self.fraction_train <= 1.0, "collab.fraction_train", self.fraction_train, "must be in (0, 1]")
        check(0.0 < self.density <= 1.0, "collab.density", self.density, "must be in (0, 1]")
        check(self.cpus >= 1, "collab.cpus", self.cpus, "must be a positive integer")
        if self.num_clients is not None:
            check(self.num_clients >= 1, "collab.num_clients", self.num_clients, "must be a positive integer (or null)")
        for i, rate in enumerate(self.corruption):
            check(0.0 <= rate < 1.0, f"collab.corruption[{i}]", rate, "each client's corrupted share must be in [0, 1)")
        check(len(set(self.clients)) == len(self.clients), "collab.clients", list(self.clients), "names a partition twice")


ConfigStore.instance().store(group="collab", name="collab_schema", node=CollabConfig)
