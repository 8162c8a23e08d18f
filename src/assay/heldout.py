"""Held-out comparisons of the trained policy with its reference (the model training started from).

Two numbers the preference-learning papers report next to accuracy:

- **Win rate against the reference** under the ground-truth reward. Both models answer every held-out
  prompt greedily; each answer is scored with ``assay.data.rewards.skill_reward``, and

      win_rate = P(r_policy > r_ref) + ½·P(r_policy = r_ref)

  over prompts: 0.5 means no better than the starting model, ties (both exact, or equally close)
  count half.
- **KL to the reference** on held-out responses. Teacher forced on the held-out *chosen* responses
  (the data, not the policy's samples), at every completion token t with context c_t = (prompt,
  y_<t) the exact divergence over the whole vocabulary V,

      KL_t = Σ_{v∈V} π_θ(v|c_t) · [log π_θ(v|c_t) − log π_ref(v|c_t)]   ≥ 0,

  averaged over all completion tokens of the split (a token mean, pooled over prompts). Exact per
  token, so it has no sampling variance and is never negative, unlike the single-sample estimator
  log π_θ(y_t) − log π_ref(y_t); it is a per-token KL on the data's contexts, not the sequence-level
  KL of the policy's own generations.

The reference's weights are kept on disk during training (``ReferenceWeights``) and loaded at test
time only: one extra model in memory while the test split is evaluated.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

from assay.lazy import F, torch

from assay.data.collate import IGNORE

SNAPSHOT = "reference_init.pt"
GENERATIONS = "test_generations.parquet"
HELDOUT_IDS = "heldout_ids.json"
HELDOUT_SPLITS = ("val", "test")


# ---- the two statistics, on plain tensors ----------------------------------------------------------
def win_scores(policy_rewards: torch.Tensor, reference_rewards: torch.Tensor) -> torch.Tensor:
    """[B] 1 where the policy's reward is higher, ½ on a tie, 0 where lower; the mean is the win rate."""
    return (policy_rewards > reference_rewards).float() + 0.5 * (policy_rewards == reference_rewards).float()


def token_kl(policy_logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """[N] exact KL(π_θ ‖ π_ref) of the next-token distributions given by two [N, V] logit rows."""
    logp = F.log_softmax(policy_logits.float(), dim=-1)
    logq = F.log_softmax(reference_logits.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1).clamp(min=0.0)


# ---- the logits that predict each response token, in either preference layout ---------------------
def response_logits(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, V] logits at the positions that predict each response token, [N] the sequence each token
    belongs to: pair k's chosen response is k, its rejected response B + k), for both batch layouts
    of ``collate.Collator`` (the same positions ``objectives.logps.pair_logps`` scores)."""
    if "target_index" in batch:
        from assay.objectives.logps import model_attention_mask, shared_prompt_mask

        mask = model_attention_mask(model, shared_prompt_mask(batch["segment"], batch["part"]))
        logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"], use_cache=False).logits
        return logits.reshape(-1, logits.size(-1))[batch["target_index"]], batch["target_seq"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1]
    scored = batch["labels"][:, 1:] != IGNORE
    rows = torch.arange(scored.size(0), device=scored.device)[:, None].expand_as(scored)
    return logits[scored], rows[scored]


@torch.no_grad()
def chosen_kl(policy: torch.nn.Module, reference: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair of a preference batch: ([B] summed token KL over the chosen response, [B] its token count)."""
    p_logits, seq = response_logits(policy, batch)
    q_logits, _ = response_logits(reference, batch)
    n = len(batch["ids"])
    chosen = seq < n
    kl = token_kl(p_logits[chosen], q_logits[chosen])
    total = kl.new_zeros(n).index_add(0, seq[chosen], kl)
    count = torch.bincount(seq[chosen], minlength=n).to(kl.dtype)
    return total, count


# ---- the reference weights, kept on disk until the test -------------------------------------------
class ReferenceWeights:
    """The weights a run started from, loadable at test time.

    A run that starts from an earlier run (``model.init_from``, no LoRA) reloads that run's model;
    any other run (random initialisation, LoRA adapters, a Hub model) writes its initial state dict to
    ``<run_dir>/reference_init.pt`` before training and loads it into a copy of the trained policy
    at test time. The snapshot is removed once the test is done.
    """

    def __init__(self, model_config, model: torch.nn.Module, run_dir: Path, write: bool = True):
        self.run_dir = Path(run_dir)
        self.init_from: Optional[Path] = None
        if model_config.init_from is not None and model_config.lora.r == 0:
            self.init_from = Path(model_config.init_from)
            self.dtype, self.settings = getattr(torch, model_config.dtype), model_config.apply_compute_settings
        elif write:
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, self.snapshot)

    @property
    def snapshot(self) -> Path:
        return self.run_dir / SNAPSHOT

    def load(self, policy: torch.nn.Module) -> torch.nn.Module:
        """The reference model, frozen, in eval mode, on the policy's device."""
        device = next(policy.parameters()).device
        if self.init_from is not None:
            from assay.models.build import load_run_model

            model, _ = load_run_model("model.init_from", str(self.init_from), self.init_from, self.dtype)
            self.settings(model)
        else:
            model = copy.deepcopy(policy)
            model.load_state_dict(torch.load(self.snapshot, map_location="cpu", weights_only=True))
        model.requires_grad_(False)
        return model.to(device).eval()

    def cleanup(self) -> None:
        self.snapshot.unlink(missing_ok=True)


def write_heldout_ids(splits, run_dir: Path) -> Path:
    """``heldout_ids.json``: the example ids of the validation and test splits, in split order (what
    every held-out metric of the run was measured on, so another tool can score the same prompts)."""
    import json

    path = Path(run_dir) / HELDOUT_IDS
    ids = {split: [str(i) for i in splits[split]["id"]] for split in HELDOUT_SPLITS if split in splits}
    path.write_text(json.dumps(ids, indent=1))
    return path


def write_generations(rows: list[dict], run_dir: Path) -> Path:
    """The per-prompt test generations, one row per generated held-out prompt: the policy's greedy
    answer, its reward and exact match; against a reference (preference runs) also the reference's
    answer, its reward and the win."""
    import pandas as pd

    path = Path(run_dir) / GENERATIONS
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.drop_duplicates("id").sort_values("id").reset_index(drop=True)
    table.to_parquet(path, index=False)
    return path

