"""NICE: Non-differentiable evaluation metric-based InfluenCe Estimation (OpenReview 2wt8m5HUBs; code
JTWang2000/NICE, not read), as DataFlex implements it (OpenDCAI/DataFlex
``src/dataflex/train/selector/nice_selector.py``, read for this module).

LESS matches each training example's gradient with the gradient of the target set's next-token loss.
NICE replaces the target side by a policy gradient of the evaluation metric: for every target prompt x_j
the model samples S responses ŷ (temperature sampling), a reward r(ŷ) scores each, and

    v_j = (1/S) Σ_s r(ŷ_s) · ∇ NLL(ŷ_s | x_j)          (NLL summed over the response tokens)

is the direction along which descending raises the expected reward (REINFORCE without a baseline, in
the sign of a loss gradient). The score of a training example is the mean over targets of the cosine
between its (projected) loss gradient g_i and v_j:  s_i = (1/M) Σ_j cos(g_i, v_j). A target whose
samples all score 0 has v_j = 0 and adds 0 (DataFlex skips their backward pass too).

The reward here is the task's ground truth standing in for DataFlex's reward model or judge:
``skill`` = 1 − symbol edit distance / length against the target's reference response
(``assay.data.rewards.skill_reward``, the skills tasks' reward), or ``exact_match``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from assay.cards import MethodCard
from assay.data.rewards import skill_reward
from assay.data.text import normalise_answer, response_column
from assay.errors import check
from assay.lazy import F, datasets, torch
from assay.models.passes import eval_mode, model_device
from assay.registry import register
from assay.selection.base import SelectionContext, TargetSet
from assay.selection.scorers.gradient_scores import GradientScorer

REWARDS = ("skill", "exact_match")


def reward_of(kind: str, answer: str, response: str) -> float:
    if kind == "exact_match":
        return float(normalise_answer(response) == normalise_answer(answer))
    return skill_reward(answer, response)


def sample_responses(model: Any, prompts: list[list[int]], samples: int, max_new_tokens: int, temperature: float, seed: int,
                     pad_id: int, eos_id: Any) -> list[list[list[int]]]:
    """``samples`` sampled continuations (token ids, cut after the first eos) of every prompt, each prompt's
    draws seeded by ``seed + 997·j`` (DataFlex: seed + index·997 + the sample's number) without touching
    the global generator."""
    device = model_device(model)
    out = []
    with eval_mode(model):
        for j, prompt in enumerate(prompts):
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + 997 * j)
                ids = torch.tensor([list(prompt)] * samples, dtype=torch.long, device=device)
                generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=temperature,
                                           max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id)
            rows = []
            for row in generated[:, len(prompt):].tolist():
                if eos_id is not None and eos_id in row:
                    row = row[: row.index(eos_id) + 1]
                rows.append(row)
            out.append(rows)
    return out


@register("selection", "nice")
@dataclass
class NICE(GradientScorer, TargetSet):
    """NICE (DataFlex): mean cosine of each example's loss gradient with reward-weighted policy gradients on the target prompts."""

    card: ClassVar[MethodCard] = MethodCard(
        paper="NICE: Non-differentiable evaluation metric-based InfluenCe Estimation, data selection for instruction tuning "
              "(OpenReview 2wt8m5HUBs)",
        code="OpenDCAI/DataFlex: src/dataflex/train/selector/nice_selector.py (_compute_rl_gradient, "
             "_collect_and_save_projected_gradients, select), read for this implementation; the authors' JTWang2000/NICE was "
             "not read",
        defaults={
            "proj_dim": "4096 (DataFlex components.yaml): follows",
            "samples": "4 (DataFlex mc_samples): follows",
            "temperature": "0.7 (DataFlex generation_temperature): follows",
            "max_new_tokens": "32 (DataFlex: 512): differs: the skills answers are a few tokens",
            "reward": "skill (DataFlex: a reward model or an LLM judge scoring in [0, 1]): differs: the task's ground truth",
            "projection": "sjlt (DataFlex: TRAK's dense Rademacher projector): differs: same inner-product variance; "
                          "projection=rademacher follows",
        },
        deviations=(
            "Training gradients are plain (SGD) gradients; DataFlex's gradient_type=adam computes the Adam-preconditioned "
            "update but returns the raw gradient, so it is plain there too.",
            "Gradients over a parameter subset (LoRA adapters, else the last decoder layer; ``params``), per-sample in batches, "
            "of the mean response NLL (the target side rescaled to the summed NLL, as DataFlex's loss × token count).",
            "The reward is the task's ground truth against the target's reference response, not a reward model or judge.",
            "One model (the stage's, or dynamics_from's final weights); DataFlex scores with the model at each selection step.",
            "Keeps half by default (selector=top); DataFlex takes a configured count.",
        ),
        checked="tests/unit/selection/test_nice.py: the score against a direct computation from per-sample gradients and "
                "hand-set rewards, zero-reward targets add nothing, sampling is seeded and cut at eos",
    )

    name: str = "nice"
    proj_dim: int = 4096
    samples: int = 4
    """Responses S sampled per target prompt (DataFlex's mc_samples)."""
    temperature: float = 0.7
    """Sampling temperature (> 0)."""
    max_new_tokens: int = 32
    """Tokens sampled at most per response."""
    reward: str = "skill"
    """Ground-truth reward of a sampled response against the target's reference: ``skill`` (1 − symbol edit
    distance / length, partial credit) or ``exact_match`` (whitespace-normalised)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.samples >= 1, "selection.samples", self.samples, "must be a positive integer")
        check(self.temperature > 0, "selection.temperature", self.temperature, "must be > 0")
        check(self.max_new_tokens >= 1, "selection.max_new_tokens", self.max_new_tokens, "must be a positive integer")
        check(self.reward in REWARDS, "selection.reward", self.reward, f"must be one of {list(REWARDS)}")

    def target_gradients(self, ctx: SelectionContext) -> torch.Tensor:
        """[M, d] v_j = (1/S) Σ_s r(ŷ_s)·∇NLL_sum(ŷ_s | x_j) over the target prompts."""
        target, tok = self.target(ctx), ctx.tokenizer
        answers = target[response_column(target)]
        drawn = sample_responses(ctx.model, target["prompt_ids"], self.samples, self.max_new_tokens, self.temperature, self.seed,
                                 tok.pad_token_id, tok.eos_token_id)
        owner, prompts, responses, scale, rewards = [], [], [], [], []
        for j, rows in enumerate(drawn):
            for ids in rows:
                r = reward_of(self.reward, answers[j], tok.decode(ids, skip_special_tokens=True).strip())
                rewards.append(r)
                if r != 0.0 and ids:  # a zero reward contributes a zero gradient
                    owner.append(j), prompts.append(target["prompt_ids"][j]), responses.append(ids), scale.append(r * len(ids))
        # what the target prompts' samples earned, beside the scoring time in selection.json
        self.cost = {"target_mean_reward": float(np.mean(rewards)) if rewards else 0.0}
        if not owner:
            return torch.zeros(len(target), 1)
        feats = self.features(ctx.model, datasets.Dataset.from_dict({"prompt_ids": prompts, "completion_ids": responses}), tok.pad_token_id)
        weighted = feats * torch.tensor(scale, dtype=feats.dtype)[:, None] / self.samples
        return torch.zeros(len(target), feats.shape[1], dtype=feats.dtype).index_add_(0, torch.tensor(owner), weighted)

    def score(self, ctx: SelectionContext) -> np.ndarray:
        v = self.target_gradients(ctx)
        g = self.features(ctx.model, ctx.train, ctx.tokenizer.pad_token_id)
        if v.shape[1] != g.shape[1]:  # no target sample earned a reward: every score is 0
            return np.zeros(len(ctx.train))
        return (F.normalize(g.float(), dim=1) @ F.normalize(v.float(), dim=1).T).mean(1).numpy()
