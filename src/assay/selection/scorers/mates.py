"""MATES (Yu, Das & Xiong, NeurIPS 2024, arXiv 2406.06046): model-aware data selection with a data
influence model, re-selected every stage of training.

Training runs in stages. At the start of stage t, with the main model M_t and a reference set D_r:

1. **Oracle.** Sample ``oracle_size`` candidates x of the pool; for each, restore M_t *with its
   optimizer state*, take one optimizer step on x alone, and measure the reference loss

       I(x) = L(D_r | M_t after one step on x) − L(D_r | M_t)        (lower = more useful).

2. **Influence model.** Fit a regressor from each candidate's embedding to I(x)
   (:mod:`assay.selection.influence_model`).
3. **Select.** Predict Î for the whole pool and keep a stochastic top-20 % by predicted loss
   reduction (``selection/selector=gumbel_top``, τ = 0.5, on the predictions in the z-normalised units
   the influence model is fitted in, as the authors' model predicts); stage t trains on it.

The first stage trains on random data (the authors' stage 0), so the initial selection, before any
training, is a seeded random score. A stage here is ``rescore_every`` epochs over the kept rows
(assay re-selects at epoch boundaries, :mod:`assay.selection.rescoring`). The score is −Î in z
units (the stage's oracle values centred on their mean, divided by their spread): higher = a larger
predicted drop of the reference loss. The oracle pairs of every stage and the fitted influence model
travel in the checkpoint (``state_dict``), so a resumed run continues identically; with
``refit=false`` the model fitted at the first probed stage is reused at every later one (the study's
static arm).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from assay.cards import MethodCard
from assay.errors import UserError, check
from assay.models.passes import padded_batches
from assay.models.probe import example_losses, optimizer_copy, step_on
from assay.registry import register
from assay.selection import SelectionContext, TargetSet
from assay.selection.influence_model import RidgeInfluenceModel, fit_influence_model
from assay.selection.scorers.model_scores import ModelScorer

PROBE_OPTIMIZERS = ("run", "sgd")
STREAM = 2406060
"""Second seed word of every MATES draw (stage 0's random scores, the candidates, the held-out pairs),
so none replays the noise transforms' default_rng(seed) stream over the same rows."""


def oracle_influence(model, candidates, target, pad_id: int, make_optimizer, clip: Optional[float] = None, batch_size: int = 16) -> np.ndarray:
    """[len(candidates)] I(x) = L(target | one step on x) − L(target | model): the change of the mean
    response loss over ``target`` after one optimizer step (``make_optimizer(clone)``) from ``model``
    on each candidate alone. ``model`` itself is not touched; each probe starts from its weights."""
    target_batches = list(padded_batches(target, pad_id, batch_size, desc="mates: target batches"))
    before = float(example_losses(model, target_batches).mean())
    clone = copy.deepcopy(model)
    start = copy.deepcopy(model.state_dict())
    values = np.zeros(len(candidates))
    for i, batch in enumerate(padded_batches(candidates, pad_id, 1, desc="mates: oracle probes")):
        clone.load_state_dict(start)
        step_on(clone, make_optimizer(clone), [batch], clip)
        values[i] = float(example_losses(clone, target_batches).mean()) - before
    del clone
    return values


@register("selection", "mates")
@dataclass
class MATES(ModelScorer, TargetSet):
    """MATES (Yu et al. 2024, arXiv 2406.06046): one-step oracle → influence model → Gumbel-top-k, every stage."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="Yu, Das & Xiong 2024, MATES: Model-Aware Data Selection for Efficient Pretraining with Data Influence Models "
              "(NeurIPS 2024)",
        arxiv="2406.06046",
        code="cxcscmu/MATES@5d2860c: src/select_data/probe_oracle_data_influence.py (fabric.load of the checkpoint with its AdamW "
             "state before every probe, lr = get_wsd_lr(iter_num), clip_gradients 1.0, the reference loss after the one step), "
             "train_data_influence_model.py (scores z-normalised, 90/10 split seed 1234, best held-out Spearman), "
             "predict_data_influence.py (the predictions are the head's z-unit logits), select_data.py (Gumbel-top-k)",
        defaults={
            "probe_optimizer": "run (the oracle restores the checkpoint with its AdamW state and iteration counter and takes one "
                               "step, lr from the schedule, grad-clip 1.0): follows, with the run's own optimizer, scheduled lr "
                               "and gradient_clip_val; sgd is plain θ − η∇ at lr (a variant)",
            "oracle_size": "64 (code: 10,000 probes × 8 processes = 80k pairs a stage; the research note's small scale: 256–512): "
                           "differs, sized for a 2-core CPU run; raise it with the pool",
            "refit": "true (a new oracle and influence model every stage): follows; false = fit once and reuse (the static arm)",
            "alphas": "ridge penalties chosen by held-out Spearman (the code keeps the BERT checkpoint of best held-out Spearman)",
            "holdout": "0.1 (the code's 90/10 split): follows",
            "embedder": "hidden_mean, the run's own model (the code: a fine-tuned bert-base-uncased): differs, see deviations",
            "rescore_every": "1 epoch over the kept rows per stage (the code: stages of 10k steps): differs, see deviations",
        },
        deviations=(
            "The data influence model is ridge regression on frozen embeddings (selection.embedder: the run's mean-pooled hidden "
            "states by default, or minilm), with standardised features and z-normalised targets, not a fine-tuned BERT; the "
            "ridge α is picked by held-out Spearman as the code picks its checkpoint, then refitted on all pairs.",
            "A stage is rescore_every epochs over the kept rows (assay re-selects at epoch boundaries), not a fixed number of "
            "steps (the code: 10k): its length is rescore_every × ⌈kept / batch⌉ steps, set through the kept fraction and "
            "rescore_every; each stage still trains on that stage's selection only, as the authors' stages do.",
            "Refused under strategies that shard the model (FSDP, DeepSpeed ZeRO-3) or, with probe_optimizer=run, its "
            "optimizer state (ZeRO-2): each probe steps a whole copy. Under DDP rank 0 probes and selects for every rank.",
            "The reference set is the run's held-out target split (val, or selection.target_sources of it), not LAMBADA test.",
            "Probes run in eval mode (no dropout); the tiny Llama has none.",
            "The candidates are the run's whole training pool (the code predicts over fresh C4 shards each stage).",
        ),
        checked="tests/unit/selection/test_mates.py: the oracle against the closed-form one-SGD-step change of a bigram model's "
                "target loss, the run-optimizer probe against a hand-written AdamW step (and the run's state untouched), the "
                "ridge model recovering a planted linear influence, Gumbel-top-k and the state round trip; "
                "tests/integration/test_mates_run.py: re-selection at every stage boundary on corrupted skills, and a resume",
        notes="Cost per stage: oracle_size × (one forward-backward on the candidate + a forward pass over the target set), plus one "
              "embedding pass over the pool; reported per re-selection in the metadata (cost: oracle_seconds, oracle_probes, "
              "probe_steps, embed_seconds, fit_seconds). Keeps 20% (select_data.py keeps |C|/5). The score is minus the "
              "prediction in z units, as the authors' model is trained on z-normalised values, so gumbel_top's τ = 0.5 acts "
              "on the scale it was set for.",
    )

    budget: ClassVar[float] = 0.2
    needs_trained_model: ClassVar[bool] = False  # stage 0 is random data; the oracle probes the live model
    probes_whole_model: ClassVar[bool] = True
    """The oracle deep-copies the live model (and with probe_optimizer=run its optimizer state): refused under sharding strategies."""

    name: str = "mates"
    rescore_every: Optional[int] = 1
    """Epochs per stage (over the kept rows): the pool is re-probed and re-selected at the end of every this many epochs."""
    oracle_size: int = 64
    """Candidates probed per stage (the oracle budget), sampled from the pool without replacement, seeded by (seed, stage)."""
    probe_optimizer: str = "run"
    """``run``: a copy of the run's optimizer, its state (Adam moments, step count) and scheduled learning rate, with the
    run's gradient clip (the paper's probe). ``sgd``: one plain gradient step θ ← θ − lr·∇ (the first-order view)."""
    lr: Optional[float] = None
    """Learning rate of the ``sgd`` probe; null = the run's current learning rate."""
    embedder: str = "hidden_mean"
    """Embedder whose vectors the influence model reads (``hidden_mean``: the live model's mean-pooled hidden states;
    ``minilm``: a frozen sentence encoder)."""
    embedder_options: dict[str, Any] = field(default_factory=dict)
    """Fields of the embedder's config (e.g. ``{weighting: position}``)."""
    alphas: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    """Ridge penalties tried on standardised features; the best held-out Spearman wins."""
    holdout: float = 0.1
    """Share of a stage's oracle pairs held out to choose α and report the influence model's Spearman."""
    refit: bool = True
    """Probe and refit every stage (MATES); false = fit once at the first probed stage and reuse it (static)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.rescore_every) and self.rescore_every >= 1, "selection.rescore_every", self.rescore_every,
              "MATES re-selects during training: a stage of >= 1 epochs")
        check(self.oracle_size >= 4, "selection.oracle_size", self.oracle_size, "must be >= 4 probes (an influence model needs pairs)")
        check(self.probe_optimizer in PROBE_OPTIMIZERS, "selection.probe_optimizer", self.probe_optimizer, f"must be one of {list(PROBE_OPTIMIZERS)}")
        check(self.lr is None or self.lr > 0, "selection.lr", self.lr, "must be > 0 (or null: the run's learning rate)")
        check(len(self.alphas) > 0 and all(a > 0 for a in self.alphas), "selection.alphas", self.alphas, "must be a non-empty list of penalties > 0")
        check(0.0 <= self.holdout < 1.0, "selection.holdout", self.holdout, "must be in [0, 1)")
        self.online = False
        self.stage = 0
        self.pairs: list[dict] = []
        self.influence_model: Optional[RidgeInfluenceModel] = None

    def for_rescoring(self, run_dir) -> "MATES":
        self.online = True  # the same object, so the pairs and the influence model carry over between stages
        return self

    # ---- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        model = None if self.influence_model is None else self.influence_model.state_dict()
        return {"stage": self.stage, "pairs": self.pairs, "influence_model": model}

    def load_state_dict(self, state: dict) -> None:
        self.stage = int(state["stage"])
        self.pairs = [dict(p) for p in state["pairs"]]
        model = state.get("influence_model")
        self.influence_model = None if model is None else RidgeInfluenceModel.from_state(model)

    # ---- scoring --------------------------------------------------------------------------------
    def probe_optimizer_for(self, ctx: SelectionContext):
        """``clone -> optimizer`` for the probes."""
        if self.probe_optimizer == "run":
            if ctx.optimizer is None:
                raise UserError("selection.probe_optimizer", "run", "copies the live run's optimizer, and this selection runs outside "
                                "training; use selection.probe_optimizer=sgd with selection.lr")
            return lambda clone: optimizer_copy(ctx.optimizer, clone)
        lr = self.lr if self.lr is not None else (ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else None)
        if lr is None:
            raise UserError("selection.lr", None, "the sgd probe needs a learning rate outside training")
        from assay.lazy import torch

        return lambda clone: torch.optim.SGD([p for p in clone.parameters() if p.requires_grad], lr=float(lr))

    def oracle(self, ctx: SelectionContext, rows: np.ndarray) -> np.ndarray:
        """I(x) of the pool rows ``rows`` at the live model."""
        return oracle_influence(ctx.model, ctx.train.select(rows.tolist()), self.target(ctx), ctx.tokenizer.pad_token_id,
                                self.probe_optimizer_for(ctx), ctx.gradient_clip if self.probe_optimizer == "run" else None, self.batch_size)

    def features(self, ctx: SelectionContext) -> np.ndarray:
        from assay.embeddings.build import build_embedder

        # no cache: the live model's embeddings change every stage
        return build_embedder(self.embedder, self.embedder_options).embed(ctx.train, ctx.model, ctx.tokenizer, None)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        n = len(ctx.train)
        # checked at the initial selection too, so a budget the pool cannot meet stops the run before it trains
        check(self.oracle_size <= n, "selection.oracle_size", self.oracle_size, f"exceeds the pool of {n} training examples")
        if not self.online:  # before training: stage 0 trains on random data, as the authors' first stage
            self.cost = {"stage": 0, "oracle_probes": 0, "probe_steps": 0, "oracle_seconds": 0.0}
            return np.random.default_rng([int(self.seed), STREAM, 0, 0]).random(n)
        self.stage += 1
        started = time.perf_counter()
        probed = self.refit or self.influence_model is None
        oracle_seconds, report = 0.0, {}
        if probed:
            rows = np.sort(np.random.default_rng([int(self.seed), STREAM, self.stage, 1]).choice(n, self.oracle_size, replace=False))
            values = self.oracle(ctx, rows)
            oracle_seconds = time.perf_counter() - started
        embedded = time.perf_counter()
        x = self.features(ctx)
        fitted = time.perf_counter()
        if probed:
            self.influence_model, report = fit_influence_model(x[rows], values, self.alphas, self.holdout, [int(self.seed), STREAM, self.stage, 2])
            ids = ctx.train.select(rows.tolist())["id"]
            self.pairs.append({"stage": self.stage, "ids": [str(i) for i in ids], "values": values.tolist()})
        # z units, as the authors' influence model (trained on z-normalised oracle values) predicts: the
        # Gumbel noise of the selector is then on the scale the paper's τ = 0.5 was set for
        predicted = self.influence_model.predict_z(x)
        done = time.perf_counter()
        self.cost = {
            "stage": self.stage, "refit": probed, "oracle_probes": self.oracle_size if probed else 0,
            "probe_steps": self.oracle_size if probed else 0, "oracle_seconds": oracle_seconds,
            "oracle_seconds_per_probe": oracle_seconds / self.oracle_size if probed else 0.0,
            "embed_seconds": fitted - embedded, "fit_seconds": done - fitted, "influence_model": report,
        }
        return -predicted
