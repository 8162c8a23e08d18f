"""RHO-1's Selective Language Modeling (arXiv 2404.07965): which tokens are kept and the loss, by hand;
the per-token reference log-probs from the cache."""

from __future__ import annotations

import datasets
import pytest
import torch

from assay.data.collate import IGNORE, Collator
from assay.errors import UserError
from assay.objectives.losses.rho1 import Rho1, kept_count, select_tokens, slm_loss

# Two samples (targets of width 4; the first position is a prompt token, row 1 padded at the end):
#   row 0: log p = -1.0, -0.2, -2.0   ref = -0.5, -0.1, -2.5   excess = ref - log p = 0.5, 0.1, -0.5
#   row 1: log p = -3.0, -0.4         ref = -1.0, -0.6         excess = 2.0, -0.2
# N = 5 tokens, keep 0.6: k = 3, the excesses 2.0 (row 1), 0.5 and 0.1 (row 0).
# The masked mean NLL over the kept tokens: (1.0 + 0.2 + 3.0) / 3 = 1.4.
MASK = torch.tensor([[False, True, True, True], [False, True, True, False]])
LOGPS = torch.tensor([[0.0, -1.0, -0.2, -2.0], [0.0, -3.0, -0.4, 0.0]])
REF = torch.tensor([[0.0, -0.5, -0.1, -2.5], [0.0, -1.0, -0.6, 0.0]])


def test_kept_tokens_and_loss_by_hand():
    out = Rho1(keep_ratio=0.6).from_token_logps(LOGPS, REF, MASK)
    kept = torch.tensor([[False, True, True, False], [False, True, False, False]])
    assert torch.equal(out.token_mask, kept)
    assert out.loss.tolist() == pytest.approx([2 * 1.2 / 3, 2 * 3.0 / 3])  # each sample's share of the batch loss
    assert float(out.loss.mean()) == pytest.approx(1.4)
    assert Rho1(keep_ratio=0.6).aggregate(out).item() == pytest.approx(1.4)  # the mean aggregator gives Eq. 3
    assert out.metrics["kept_share"].tolist() == pytest.approx([2 / 3, 1 / 2])
    assert out.metrics["excess"].tolist() == pytest.approx([0.1 / 3, 1.8 / 2])
    assert out.metrics["nll"].tolist() == pytest.approx([3.2 / 3, 3.4 / 2])


def test_keep_ratio_one_is_the_token_mean_and_small_ratios_keep_one_token():
    everything = Rho1(keep_ratio=1.0).from_token_logps(LOGPS, REF, MASK)
    assert float(everything.loss.mean()) == pytest.approx((1.0 + 0.2 + 2.0 + 3.0 + 0.4) / 5)
    one = Rho1(keep_ratio=0.01).from_token_logps(LOGPS, REF, MASK)
    assert int(one.token_mask.sum()) == 1 and bool(one.token_mask[1, 1])  # the largest excess (2.0)
    assert [kept_count(10, 0.6), kept_count(5, 0.6), kept_count(7, 0.5), kept_count(0, 0.6)] == [6, 3, 4, 0]


def test_the_selection_carries_no_gradient():
    logps = LOGPS.clone().requires_grad_(True)
    loss = Rho1(keep_ratio=0.6).from_token_logps(logps, REF, MASK).loss.mean()
    loss.backward()
    # d/d log p of -Σ_kept log p / 3: -1/3 on the kept tokens, 0 elsewhere (padding and prompt included)
    expected = torch.tensor([[0.0, -1 / 3, -1 / 3, 0.0], [0.0, -1 / 3, 0.0, 0.0]])
    assert torch.allclose(logps.grad, expected)


def test_ranking_is_over_the_batch_not_per_sample():
    kept = select_tokens(torch.tensor([[5.0, 4.0, 3.0], [0.1, 0.2, 0.3]]), torch.ones(2, 3, dtype=torch.bool), 0.5)
    assert kept.tolist() == [[True, True, True], [False, False, False]]
    assert slm_loss(torch.tensor([[-1.0, -1.0, -1.0], [-9.0, -9.0, -9.0]]), kept).tolist() == pytest.approx([2.0, 0.0])


def test_bad_values_are_refused(compose_cfg):
    with pytest.raises(UserError, match="objective.keep_ratio"):
        Rho1(keep_ratio=0.0)
    from assay.config import validate

    with pytest.raises(UserError, match="objective/controller"):
        validate(compose_cfg(["objective=rho1", "objective/controller=beta_dpo"]))
    with pytest.raises(UserError, match="objective.reference_from"):
        Rho1(reference_from="/nonexistent/run")
    spec = validate(compose_cfg(["objective=rho1", "objective.keep_ratio=0.7"]))
    assert spec.objective.keep_ratio == 0.7 and spec.objective.needs_reference and spec.objective.data_format == "sft"


# ---- the per-token reference log-probs: cached, aligned with the targets ---------------------------


def sft_rows(n: int = 5, seed: int = 0, vocab: int = 29) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731
    return [{"id": str(i), "_row": i, "source": "s", "answer": "", "prompt_ids": rand(1 + i % 3), "completion_ids": rand(2 + 3 * i % 7)}
            for i in range(n)]


def test_reference_token_logps_come_from_the_cache_and_align_with_the_targets(tmp_path):
    from assay.objectives import reference
    from assay.objectives.logps import sequence_logps
    from tests.unit.objectives.test_trl_parity import tiny

    ref = tiny(1)
    rows = sft_rows()
    splits, files = reference.attach_reference_logps(ref, datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}), 0, 2, tmp_path)
    values = splits["train"]["ref_token_logps"]
    assert [len(v) for v in values] == [len(r["completion_ids"]) for r in rows]
    batch = Collator(0, "sft", with_generation=False)([splits["train"][i] for i in range(len(rows))])
    with torch.no_grad():
        direct = sequence_logps(ref, batch["input_ids"], batch["attention_mask"], batch["labels"])
    mask = batch["labels"][:, 1:] != IGNORE
    assert torch.equal(batch["ref_token_logps"] != 0, mask)  # 0 off the completion (log-probs here are < 0)
    assert torch.allclose(batch["ref_token_logps"], direct.token_logps, atol=1e-5)
    # a second run reads every prefix from the cache (nothing new is written) and gets the same values
    shards = sorted((tmp_path).rglob("*.parquet"))
    again, _ = reference.attach_reference_logps(ref, datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}), 0, 2, tmp_path)
    assert sorted(tmp_path.rglob("*.parquet")) == shards
    assert all(a == pytest.approx(b, abs=1e-6) for a, b in zip(again["train"]["ref_token_logps"], values))
    # one list per (prompt, completion) in the token cache; its sum is the sequence log-prob DPO's cache holds
    cache = reference.TokenCache(tmp_path, reference.weights_digest(ref)[:24])
    assert files["train"] == str(cache.dir)
    stored = cache.load()[reference.sequence_key(rows[2]["prompt_ids"], rows[2]["completion_ids"])]
    assert stored == pytest.approx(values[2], abs=1e-7)
    pair = datasets.Dataset.from_list([{**rows[2], "chosen_ids": rows[2]["completion_ids"], "rejected_ids": rows[2]["completion_ids"]}])
    whole = reference.compute_reference_logps(ref, pair, 0, 1, "pair")[0, 0]
    assert float(whole) == pytest.approx(sum(values[2]), abs=1e-4)


def test_compute_on_a_model_matches_the_model_free_half(tmp_path):
    from assay.objectives import reference
    from tests.unit.objectives.test_trl_parity import tiny

    policy, ref = tiny(0), tiny(1)
    rows = sft_rows(6, seed=3)
    splits, _ = reference.attach_reference_logps(ref, datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}), 0, 4, tmp_path)
    batch = Collator(0, "sft", with_generation=False)([splits["train"][i] for i in range(len(rows))])
    obj = Rho1(keep_ratio=0.6)
    out = obj.compute(policy, batch)
    n = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert int(out.token_mask.sum()) == kept_count(n, 0.6)
    kept_excess = out.metrics["excess"]  # per sample mean excess; the kept tokens have the batch's highest excess
    assert kept_excess.shape == (6,) and 0 < float(out.metrics["kept_share"].mean()) < 1
    out.loss.mean().backward()
    assert policy.lm_head.weight.grad is not None


def test_token_cache_writes_shards_and_merges_them_like_the_sequence_cache(tmp_path):
    from assay.objectives.reference import MAX_SHARDS, TokenCache

    cache = TokenCache(tmp_path, "digest")
    for i in range(MAX_SHARDS + 1):
        cache.add({f"k{i}": [-0.5, -float(i)]})
    assert len(cache.shards()) == 1 and cache.dir.name == "digest-tokens"
    assert cache.load() == {f"k{i}": [-0.5, -float(i)] for i in range(MAX_SHARDS + 1)}
    bad = cache.dir / "zz-broken.parquet"
    bad.write_bytes(b"not parquet")
    assert len(cache.load()) == MAX_SHARDS + 1 and not bad.exists()  # reported, removed, its entries recomputed later
