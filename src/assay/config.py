"""The top-level schema and the registries behind every config group.

``conf/train.yaml`` composes one option per group; each option's YAML extends a dataclass schema
registered here (via ``assay.registry.register``), so Hydra rejects unknown keys and wrong types at
compose time, and :func:`validate` turns the composed config into typed, range-checked objects
before anything is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig, OmegaConf

from assay.errors import UserError, check
from assay.registry import GROUPS, check_choices, discover, to_object
from assay.trainers import check_run as check_trainer_needs

# Every module of the concern packages is imported, so that registering an entry is all it takes to
# add a method: a new module + its YAML + its tests, nothing else changes.
discover("assay.data", "assay.mixing", "assay.models", "assay.embeddings", "assay.objectives", "assay.selection", "assay.ordering", "assay.batch_selection", "assay.dynamics", "assay.trainers", "assay.loggers")

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class OptimConfig:
    """AdamW with a learning-rate schedule."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 50
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "must be > 0")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "must be >= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "must be >= 0")
        check(self.schedule in SCHEDULES, "optim.schedule", self.schedule, f"must be one of {list(SCHEDULES)}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", list(self.betas), "must be two numbers in [0, 1)")


@dataclass
class EvalConfig:
    """Held-out evaluation."""

    max_new_tokens: int = 12
    """Greedy generation length for exact match."""
    generate: bool = True
    """Generate greedy answers to held-out prompts: exact match and answer reward, the win rate against
    the reference, and ``test_generations.parquet``. false: no generation at all (validation included),
    losses and preference metrics only."""
    val_generate: bool = True
    """Also measure exact match at every validation (not only on the test split); with ``generate``."""
    max_examples: Optional[int] = None
    """Generate for at most this many examples of each held-out split (the first rows of the split;
    losses, preference accuracy and KL still use every row); null = all."""
    kl: bool = True
    """Preference runs against a reference: the exact token KL(π_θ ‖ π_ref) on the test split's chosen
    responses (``test/kl_ref``; one forward pass of policy and reference per test batch)."""
    per_source_metrics: list[str] = field(default_factory=lambda: ["all"])
    """Metrics also reported per source (domain), as ``<split>/<metric>/<source>``; ``all`` = every metric."""
    sample_prompts: list[str] = field(default_factory=list)
    """Prompts answered greedily (``max_new_tokens``) at every validation and after the last step, rendered as
    the training prompts are: to the console, ``samples.csv`` and a wandb table (``assay.samples``)."""

    def __post_init__(self) -> None:
        check(self.max_new_tokens > 0, "eval.max_new_tokens", self.max_new_tokens, "must be a positive integer")
        check(self.max_examples is None or self.max_examples > 0, "eval.max_examples", self.max_examples, "must be a positive integer (or null for all)")
        check(all(isinstance(p, str) and p.strip() for p in self.sample_prompts), "eval.sample_prompts", self.sample_prompts, "must be a list of non-empty prompts")


@dataclass
class PathsConfig:
    root_dir: str = "."
    log_dir: str = "logs"
    output_dir: str = MISSING
    """This run's directory (Hydra's output dir)."""
    cache_dir: str = "${oc.env:ASSAY_CACHE,${oc.env:HOME}/.cache/assay}"
    """Artefacts shared across runs: reference log-probs, fetched models."""


# --------------------------------------------------------------------------------------------------
# The ``collab`` config group: several private clients trained together (CLUES's setting).
#
# Zhao et al., "CLUES: Collaborative Private-domain High-quality Data Selection for LLMs via Training
# Dynamics" (NeurIPS 2024): every client (data silo) holds mixed-quality private data; all share a
# public trusted anchor / validation set. Phase 1 scores every client's examples against the public
# set and keeps those at least as good as a global threshold derived from the anchor scores; phase 2
# trains one model on what was kept, by federated averaging or by merging adapters.
#
# The scorer and its keep rule are the run's ``selection`` group (``selection=clues``,
# ``selection=el2n selection/selector=anchor_quantile``, ``selection=perplexity selection/selector=top
# selection.selector.fraction=0.6``, ...); this group says who the clients are and how they collaborate.
# Nothing here imports Flower: composing and validating a config stays cheap.


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
    """Collaborative training rounds of phase 2 (FedAvg rounds; ``local`` clients train ``rounds``
    rounds on their own; under a merge rule every client trains ``rounds x local_steps`` steps once)."""
    local_steps: int = 10
    """Optimizer steps each sampled client takes per round (fresh AdamW every round, as in FedAvg)."""
    local_schedule: str = "constant"
    """Learning-rate schedule over one round's local steps (``optim.lr`` at its peak, no warm-up;
    ``constant``, ``linear`` or ``cosine``): every round restarts the clients' optimizers, so the
    single-site ``optim.schedule`` / ``warmup_steps`` over ``trainer.max_steps`` do not apply."""
    fraction_train: float = 1.0
    """Share of the clients sampled per round (Flower FedAvg's ``fraction_train``), in (0, 1]."""
    aggregation: Any = field(default_factory=lambda: {"name": "fedavg"})
    """The collaborative rule of phase 2 and its own fields (``collab/aggregation=<rule>``, options in
    ``conf/collab/aggregation/``, typed by ``assay.collab.rules.rule_of``): ``fedavg`` (federated
    averaging of the trainable parameters by example count, McMahan et al. 2017, arXiv 1602.05629),
    ``local`` (no collaboration, the baseline; metrics are means over the clients' own models), or a
    one-shot merge of the clients' LoRA adapters: ``merge_linear``, ``ties`` (TIES on the task
    vectors s·BA, Yadav et al. 2023, arXiv 2306.01708, projected back to rank r) or ``ties_factors``
    (TIES on the A and B factors separately, PEFT's ``add_weighted_adapter(..., "ties")`` as CLUES's
    code calls it); ``collab.aggregation.density`` for the two TIES rules; or ``fedbiot`` (Wu et al.
    2024, arXiv 2406.17706: clients tune the last layers on a layer-dropped emulator the server
    re-aligns by distillation every round, ``assay.collab.fedbiot``)."""
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

    moved_keys: ClassVar[dict[str, str]] = {
        "mode": "collab/aggregation=<fedavg|local|merge_linear|ties|ties_factors|fedbiot> (mode=merge: collab/aggregation=ties_factors, CLUES's merge, or ties, TIES on task vectors)",
        "merge_method": "collab/aggregation=<merge_linear|ties|ties_factors> (merge_method=linear: merge_linear; ties: ties_factors, or ties on task vectors)",
        "density": "collab.aggregation.density (with collab/aggregation=ties or ties_factors)",
    }
    """Fields of the former single collab config, and where each now lives (the rule and its own fields)."""

    def __post_init__(self) -> None:
        check(isinstance(self.aggregation, (str, dict)) or hasattr(self.aggregation, "name"), "collab.aggregation", self.aggregation,
              "must name a rule: collab/aggregation=<fedavg|local|merge_linear|ties|ties_factors|fedbiot>")
        check(self.local_schedule in ("constant", "linear", "cosine"), "collab.local_schedule", self.local_schedule, "must be one of ['constant', 'linear', 'cosine']")
        check(self.rounds >= 1, "collab.rounds", self.rounds, "must be a positive integer (collaborative training rounds)")
        check(self.local_steps >= 1, "collab.local_steps", self.local_steps, "must be a positive integer")
        check(self.warmup_rounds >= 0, "collab.warmup_rounds", self.warmup_rounds, "must be >= 0")
        check(0.0 < self.fraction_train <= 1.0, "collab.fraction_train", self.fraction_train, "must be in (0, 1]")
        check(self.cpus >= 1, "collab.cpus", self.cpus, "must be a positive integer")
        if self.num_clients is not None:
            check(self.num_clients >= 1, "collab.num_clients", self.num_clients, "must be a positive integer (or null)")
        for i, rate in enumerate(self.corruption):
            check(0.0 <= rate < 1.0, f"collab.corruption[{i}]", rate, "each client's corrupted share must be in [0, 1)")
        check(len(set(self.clients)) == len(self.clients), "collab.clients", list(self.clients), "names a partition twice")


ConfigStore.instance().store(group="collab", name="collab_schema", node=CollabConfig)


@dataclass
class TrainConfig:
    model: Any = MISSING
    data: Any = MISSING
    mixture: Any = MISSING
    noise: Any = MISSING
    selection: Any = MISSING
    ordering: Any = MISSING
    batch_selection: Any = MISSING
    objective: Any = MISSING
    dynamics: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    """The default for every seed field (data, noise, selection, ordering, init)."""
    task_name: str = "train"
    stage: str = "train"
    """Name of this stage (wandb job_type; sub-directory in multi-stage recipes)."""
    stages: list[Any] = field(default_factory=list)
    """Multi-stage recipe: a list of {name, overrides, init_from_previous}; each stage starts from the
    previous stage's model unless it sets ``init_from_previous: false``."""
    stage_args: dict[str, list[str]] = field(default_factory=dict)
    """Overrides for one stage of the recipe, after its own and the command line's: written on the
    command line as ``<stage>:<override>`` (``dpo:data.train_file=prefs.jsonl``; ``assay.run.stages``)."""
    previous_stage: Optional[str] = None
    """Run directory of the stage before this one in a multi-stage recipe (set by the recipe; null in
    a single run). Stage overrides may read it, e.g. ``selection.dynamics_from=${previous_stage}``."""
    ckpt_path: Optional[str] = None
    """Resume from this checkpoint (``last`` = the run directory's last.ckpt if present)."""
    checkpoint_every_n_steps: Optional[int] = None
    """Write last.ckpt every this many optimizer steps (default: a quarter of trainer.max_steps).
    Smaller = less work lost to a kill or preemption, at the cost of checkpoint writes."""
    keep_checkpoints: bool = False
    """Keep every checkpoint written (``checkpoints/step=<n>.ckpt``, one per checkpoint_every_n_steps),
    not only last.ckpt: LESS, CLUES and LQS sum over a warm-up stage's checkpoints, weighted by each
    one's learning rate (TracIn-CP)."""
    allow_order_change: bool = False
    """Resume even if the checkpoint was trained on a different data order."""
    collab: Any = None
    """Collaborative training over private clients (``collab=<preset>``, assay.collab); null = one site."""


ConfigStore.instance().store(name="train_schema", node=TrainConfig)



@dataclass
class RunSpec:
    """The composed config as typed, validated objects: what a run is built from."""

    model: Any
    data: Any
    mixture: Any
    noise: Any
    selection: Any
    ordering: Any
    batch_selection: Any
    objective: Any
    dynamics: Any
    trainer: Any
    logger: Any
    optim: OptimConfig
    eval: EvalConfig
    raw: DictConfig


def refuse_non_finite(cfg: DictConfig) -> None:
    """``inf`` and ``nan`` pass every "> 0" range check: no number in a run's config may be non-finite."""
    from assay.run.results import flatten

    for key, value in flatten({k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise UserError(key, value, "must be a finite number")


def validate(cfg: DictConfig) -> RunSpec:
    """Range checks and cross-group consistency, before anything is built."""
    refuse_non_finite(cfg)
    check(isinstance(cfg.task_name, str) and cfg.task_name not in ("", ".", "..") and not re.search(r"[/\\]", cfg.task_name), "task_name",
          cfg.task_name, "must be a plain name (it names the folder under paths.log_dir): no path separators, not . or ..")
    if HydraConfig.initialized():
        check_choices(HydraConfig.get().runtime.choices)
    parts = {g: to_object(cfg[g]) for g in GROUPS}
    spec = RunSpec(**parts, optim=to_object(cfg.optim), eval=to_object(cfg.eval), raw=cfg)
    # Columns the selection reads from the data (a precomputed embedding) are kept by the loader.
    extra = [c for c in getattr(spec.selection, "data_columns", ()) if c not in spec.data.keep_columns]
    spec.data.keep_columns = [*spec.data.keep_columns, *extra]
    check_weight_column(spec)
    from assay.run.stages import PENDING

    # (a recipe's later stage is checked before its earlier stage wrote the model: checked again when it starts)
    if getattr(spec.data, "pairs", "rated") == "on_policy" and spec.model.init_from is None and cfg.get("previous_stage") != PENDING:
        raise UserError("data.pairs", "on_policy", "samples the pairs from the model the run starts from: set model.init_from=<an SFT run directory>")
    if spec.data.format != spec.objective.data_format:
        raise UserError(
            "data.format",
            spec.data.format,
            f"objective={spec.objective.name} trains on {spec.objective.data_format} data; set data.format={spec.objective.data_format}",
        )
    from assay.data.mixture import check_run

    check_run(spec)
    if spec.trainer.max_steps is None and spec.mixture.drawn:
        raise UserError("trainer.max_epochs", spec.trainer.max_epochs,
                        f"mixture={spec.mixture.name} draws every batch by its weights, so its run has no epochs; set trainer.max_steps")
    if spec.data.format not in spec.dynamics.data_formats:
        raise UserError("dynamics", spec.dynamics.name, f"records {' or '.join(spec.dynamics.data_formats)} batches only, and this run trains on {spec.data.format} data; use dynamics=losses")
    spec.ordering.check_selection(spec.selection)
    spec.batch_selection.check_run(spec)
    if not cfg.get("collab"):  # a collaborative run scores with the global model after its warm-up rounds
        spec.selection.check_scoring_model(spec.model)
    check_trainer_needs(spec)  # what the trainer's strategy and the model's compute settings need from the rest
    from assay.run.distributed import check as check_processes

    check_processes(spec)
    return spec


def check_weight_column(spec: RunSpec) -> None:
    """``data.weight_column``: kept by the loader, and refused where a per-example weight has no meaning."""
    column = spec.data.weight_column
    if column is None:
        return
    check(bool(str(column).strip()), "data.weight_column", column, "must name a column (or be null)")
    if column not in spec.data.keep_columns:
        spec.data.keep_columns = [*spec.data.keep_columns, column]
    if getattr(spec.objective, "sorts_batch", False):
        raise UserError("data.weight_column", column, f"objective={spec.objective.name} compares the batch's sorted log-ratios, so a "
                        "loss belongs to a rank, not to an example; use another objective or data.weight_column=null")
    if hasattr(spec.mixture, "reweighting"):
        raise UserError("data.weight_column", column, f"mixture={spec.mixture.name} trains the proxy on its own per-domain reweighted "
                        "token loss; set data.weight_column=null")


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
