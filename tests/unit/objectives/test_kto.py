"""KTO (Ethayarajh et al. 2024, arXiv 2402.01306) on unpaired data: by hand, and against TRL 1.16's own KTOTrainer.

TRL computes the KTO loss inside ``KTOTrainer._compute_loss`` from a model's per-token log-probs; the
tests call it unbound with a stand-in ``self`` (the attributes ``KTOTrainer.__init__`` sets) and a
stand-in model returning given per-token log-probs (TRL's fused LM head output), so TRL's formulas,
its reference point z included, run as written. A batch whose main rows are one row and whose KL
rows are the whole batch gives TRL's loss of that row (z depends on the KL rows only).
"""

from __future__ import annotations

from collections import defaultdict
from types import MethodType, SimpleNamespace

import datasets
import pytest
import torch

from assay.data.collate import IGNORE, Collator, with_kl_completions
from assay.data.schemas import as_label, lookup_schema
from assay.errors import UserError
from assay.objectives.losses.kto import KTO, kto_loss, reference_point

# ---- by hand ----------------------------------------------------------------------------------------


def test_loss_by_hand():
    # ρ = (-1) - (-1.5) = 0.5 desirable, ρ = (-2) - (-1) = -1 undesirable; z = 0.2, β = 0.1
    out = KTO(beta=0.1).from_logps(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]), torch.tensor([True, False]), torch.tensor(0.2))
    sig = lambda x: 1 / (1 + torch.exp(-torch.tensor(x, dtype=torch.float64)))  # noqa: E731
    assert out.loss.tolist() == pytest.approx([1 - float(sig(0.1 * 0.3)), 1 - float(sig(0.1 * 1.2))], abs=1e-7)
    assert out.loss.tolist() == pytest.approx([0.4925005, 0.4700359], abs=1e-6)
    assert out.metrics["logratio"].tolist() == [0.5, -1.0] and out.metrics["kl"].tolist() == pytest.approx([0.2, 0.2])
    # confidence = 1 - unweighted loss: σ(β(ρ - z)) desirable, σ(β(z - ρ)) undesirable; both labels "right" here
    assert (out.metrics["confidence"] + out.loss).tolist() == pytest.approx([1.0, 1.0]) and out.metrics["label_acc"].tolist() == [1.0, 1.0]


def test_weights_scale_each_side_only():
    rho, label, z = torch.tensor([0.3, -0.7, 2.0]), torch.tensor([True, False, False]), torch.tensor(0.1)
    plain = kto_loss(rho, label, z, 0.5)
    weighted = kto_loss(rho, label, z, 0.5, desirable_weight=2.0, undesirable_weight=0.25)
    assert weighted.tolist() == pytest.approx((plain * torch.tensor([2.0, 0.25, 0.25])).tolist())
    # at ρ = z both sides give 1 - σ(0) = ½
    assert kto_loss(torch.tensor([0.1, 0.1]), torch.tensor([True, False]), z, 3.0).tolist() == pytest.approx([0.5, 0.5])


def test_reference_point_is_the_clamped_mean_without_gradient():
    policy = torch.tensor([-1.0, -3.0, -2.0], requires_grad=True)
    assert float(reference_point(policy, torch.tensor([-1.5, -2.0, -2.5]))) == pytest.approx(0.0)  # mean(0.5, -1, 0.5) = 0
    z = reference_point(policy, torch.tensor([-2.0, -3.5, -2.0]))  # mean(1, 0.5, 0) = 0.5
    assert float(z) == pytest.approx(0.5) and not z.requires_grad
    assert float(reference_point(policy, torch.tensor([-0.5, -2.0, -1.0]))) == 0.0  # mean -0.5 → clamped at 0


def test_kto_refuses_a_controller_and_bad_values(compose_cfg):
    with pytest.raises(UserError, match="objective.beta"):
        KTO(beta=0.0)
    with pytest.raises(UserError, match="desirable_weight"):
        KTO(desirable_weight=-1.0)
    from assay.config import validate

    with pytest.raises(UserError, match="objective/controller"):
        validate(compose_cfg(["objective=kto", "data.format=unpaired", "objective/controller=beta_dpo"]))
    with pytest.raises(UserError, match="data.format"):
        validate(compose_cfg(["objective=kto"]))  # the default sft data
    assert validate(compose_cfg(["objective=kto", "data.format=unpaired"])).objective.method == "kto"


# ---- the unpaired data ------------------------------------------------------------------------------


def test_plain_schema_reads_labels():
    plain = lookup_schema("plain")
    col = lambda c: {"completion": "answer"}.get(c, c)  # noqa: E731
    assert plain.required(col, "unpaired", ("prompt", "completion")) == ["prompt", "answer", "label"]
    assert plain.text_columns(col, "unpaired", ("prompt", "completion")) == ["prompt", "answer"]
    row = plain.map_row({"prompt": "p", "answer": "a", "label": False}, col, "unpaired", "")
    assert row == {"prompt": "p", "completion": "a", "label": False}
    assert [as_label(v, "f") for v in (True, 1, 0, "true", "False")] == [True, True, False, True, False]
    with pytest.raises(UserError, match="desirability label"):
        as_label("good", "data.columns.label")


def test_skills_pairs_are_unpaired_into_a_desirable_and_an_undesirable_row():
    from assay.data.sources import SkillsData

    pairs = SkillsData(format="preference", domains=["copy"], train_per_domain=5, val_per_domain=2, test_per_domain=2, seed=0).load()
    rows = SkillsData(format="unpaired", domains=["copy"], train_per_domain=5, val_per_domain=2, test_per_domain=2, seed=0).load()
    train, source = rows["train"], pairs["train"]
    assert len(train) == 2 * len(source) and {"prompt", "completion", "label"} <= set(train.column_names)
    assert train["id"][:2] == [f"{source['id'][0]}/desirable", f"{source['id'][0]}/undesirable"]
    assert train["completion"][:2] == [source["chosen"][0], source["rejected"][0]] and train["label"][:4] == [True, False, True, False]


def test_jsonl_file_of_unpaired_rows(tmp_path):
    from assay.data.tables import JsonlData

    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "1+1", "completion": "2", "label": true}\n{"question": "2+2", "completion": "5", "label": false}\n' * 10)
    data = JsonlData(train_file=str(path), format="unpaired", columns={"prompt": "question"}, seed=0)
    data.check_files()
    train = data.load()["train"]
    assert {"prompt", "completion", "label"} <= set(train.column_names) and set(train["label"]) == {True, False}
    with pytest.raises(UserError, match="schema=plain"):
        JsonlData(train_file=str(path), format="unpaired", schema="hh", seed=0)


def test_a_file_of_pairs_is_unpaired_on_the_fly(tmp_path):
    from assay.data.tables import JsonlData

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(f'{{"id": "p{i}", "prompt": "q{i}", "good": "a{i}", "rejected": "b{i}"}}\n' for i in range(20)))
    splits = JsonlData(train_file=str(path), format="unpaired", columns={"chosen": "good"}, seed=0).load()
    rows = [r for split in splits.values() for r in split]
    assert len(rows) == 40  # every pair, in whichever split it landed, as two rows of that split
    by_id = {r["id"]: r for r in rows}
    assert by_id["p3/desirable"]["completion"] == "a3" and by_id["p3/desirable"]["label"] is True
    assert by_id["p3/undesirable"]["completion"] == "b3" and by_id["p3/undesirable"]["label"] is False
    for split in splits.values():
        pairs = {i.rsplit("/", 1)[0] for i in split["id"]}
        assert len(split) == 2 * len(pairs)


def test_reference_point_is_averaged_over_ranks_before_the_clamp(monkeypatch):
    """TRL: gather_for_metrics(kl).mean().clamp(min=0): the ranks' means averaged, then clamped."""
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, group=None: t.add_(0.5))  # the other rank's mean KL: 0.5
    # this rank's mean is -0.3 (clamped alone it would be 0): (-0.3 + 0.5) / 2 = 0.1
    assert float(reference_point(torch.tensor([-1.3, -2.3]), torch.tensor([-1.0, -2.0]))) == pytest.approx(0.1)
    # both negative: 0
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, group=None: t.add_(-0.1))
    assert float(reference_point(torch.tensor([-1.3, -2.3]), torch.tensor([-1.0, -2.0]))) == 0.0


def rows_of(lengths, seed=0, vocab=29):
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731
    return [{"id": str(i), "_row": i, "source": "s", "answer": "", "prompt_ids": rand(p), "completion_ids": rand(c), "label": i % 3 != 1}
            for i, (p, c) in enumerate(lengths)]


def test_mismatched_completions_rotate_within_each_batch_and_fit_max_length():
    rows = rows_of([(2, 3), (1, 4), (3, 1), (2, 2), (1, 5)])
    ds = with_kl_completions(datasets.Dataset.from_list(rows), batch_size=2, max_length=5)
    kl = ds["kl_completion_ids"]
    c = [r["completion_ids"] for r in rows]
    # runs of 2: (x0, y1), (x1, y0) | (x2, y3), (x3, y2) | (x4, y4); cut to max_length - |prompt|
    assert kl == [c[1][:3], c[0][:4], c[3][:2], c[2][:3], c[4][:4]]


def test_collator_builds_the_kl_sequences_and_carries_labels():
    rows = rows_of([(2, 3), (1, 4), (3, 1)])
    for r, k in zip(rows, (1, 2, 0)):
        r["kl_completion_ids"] = rows[k]["completion_ids"]
        r["ref_logps"], r["ref_KL_logps"] = -1.0 * k, -2.0 * k
    batch = Collator(0, "unpaired", with_generation=False)(rows)
    assert batch["label"].tolist() == [True, False, True] and batch["ref_KL_logps"].tolist() == [-2.0, -4.0, 0.0]
    assert batch["input_ids"].shape[0] == 3 and batch["kl_input_ids"].shape[0] == 3
    second = rows[1]["prompt_ids"] + rows[2]["completion_ids"]
    assert batch["kl_input_ids"][1, : len(second)].tolist() == second
    assert (batch["kl_labels"][1] != IGNORE).sum() == len(rows[2]["completion_ids"])


# ---- TRL's KTOTrainer._compute_loss with a stand-in trainer -------------------------------------------

trl = pytest.importorskip("trl", reason="TRL is the reference implementation of this loss: pip install -e '.[test]'")
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x


def trl_kto(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0, model=None, ref_model=None) -> SimpleNamespace:
    """The attributes ``KTOTrainer._compute_loss`` reads, as ``KTOTrainer.__init__`` sets them from a KTOConfig."""
    ns = SimpleNamespace(
        model=model if model is not None else SimpleNamespace(training=True), ref_model=ref_model, accelerator=_Accelerator(),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None), beta=beta, loss_type="kto", desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight, calculate_KL=True, precompute_ref_logps=ref_model is None, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    ns._compute_kl_logps = MethodType(KTOTrainer._compute_kl_logps, ns)
    return ns


class Rows:
    """Per-token log-probs of B unpaired rows and of their B mismatched (KL) sequences, policy and reference."""

    def __init__(self, policy, ref, lengths, kl_policy, kl_ref, kl_lengths, label):
        self.policy, self.ref, self.lengths, self.kl_policy, self.kl_ref, self.kl_lengths, self.label = (
            policy, ref, lengths, kl_policy, kl_ref, kl_lengths, label)

    @staticmethod
    def mask(lengths, width):
        return torch.arange(width)[None, :] < lengths[:, None]

    def sums(self, lp, lengths):
        return lp.masked_fill(~self.mask(lengths, lp.shape[1]), 0).sum(1)

    def trl_inputs(self, rows: slice | list) -> dict:
        """Main rows ``rows``, KL rows all of them: one prompt token, then the completion."""
        def block(lengths, width):
            comp = torch.cat([torch.zeros(len(lengths), 1, dtype=torch.long), self.mask(lengths, width).long()], dim=1)
            return torch.ones_like(comp), comp

        ids, comp = block(self.lengths[rows], self.policy.shape[1])
        kl_ids, kl_comp = block(self.kl_lengths, self.kl_policy.shape[1])
        kl_ids = kl_ids * 2  # a distinct tensor the stand-in model tells apart
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": comp, "label": self.label[rows],
                "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": kl_comp,
                "ref_logps": self.sums(self.ref, self.lengths)[rows], "ref_KL_logps": self.sums(self.kl_ref, self.kl_lengths)}

    def model(self, rows):
        outer = self

        def forward(**kwargs):
            kl = kwargs["input_ids"].max() == 2
            lp, lengths = (outer.kl_policy, outer.kl_lengths) if kl else (outer.policy[rows], outer.lengths[rows])
            lp = lp.masked_fill(~outer.mask(lengths, lp.shape[1]), 0)
            zeros = torch.zeros_like(lp)
            return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, aux_loss=None)

        return forward

    def ours(self, obj: KTO):
        z = reference_point(self.sums(self.kl_policy, self.kl_lengths), self.sums(self.kl_ref, self.kl_lengths))
        return obj.from_logps(self.sums(self.policy, self.lengths), self.sums(self.ref, self.lengths), self.label, z)


def random_rows(n, seed, dtype, kl_shift=0.0, max_len=40, labels=None) -> Rows:
    g = torch.Generator().manual_seed(seed)
    lengths, kl_lengths = torch.randint(1, max_len + 1, (n,), generator=g), torch.randint(1, max_len + 1, (n,), generator=g)
    policy, kl_policy = (-torch.rand(n, max_len, generator=g, dtype=dtype) * 3 for _ in range(2))
    ref = policy + torch.randn(n, max_len, generator=g, dtype=dtype) * 0.3
    kl_ref = kl_policy + torch.randn(n, max_len, generator=g, dtype=dtype) * 0.1 - kl_shift
    label = torch.rand(n, generator=g) < 0.5 if labels is None else labels
    return Rows(policy, ref, lengths, kl_policy, kl_ref, kl_lengths, label)


def edge_rows(dtype) -> Rows:
    """Log-ratios ±50 and 0 at lengths 1 and 500, both labels; z > 0 (KL rows 0.3 nats per row above the reference)."""
    cases = [(length, ratio, label) for length in (1, 500) for ratio in (50.0, -50.0, 0.0, 0.25) for label in (True, False)]
    n, width = len(cases), 500
    lengths = torch.tensor([c[0] for c in cases])
    ref = torch.full((n, width), -60.0, dtype=dtype)
    policy = ref + (torch.tensor([c[1] for c in cases], dtype=dtype) / lengths.to(dtype))[:, None]
    kl_ref = torch.full((n, width), -5.0, dtype=dtype)
    kl_lengths = lengths.flip(0)
    kl_policy = kl_ref + (0.3 / kl_lengths.to(dtype))[:, None]
    return Rows(policy, ref, lengths, kl_policy, kl_ref, kl_lengths, torch.tensor([c[2] for c in cases]))


CASES = {
    "random": lambda dtype: random_rows(24, 0, dtype, kl_shift=0.02),  # z > 0
    "clamped": lambda dtype: random_rows(16, 1, dtype, kl_shift=-0.05),  # mean KL < 0: z = 0
    "all_desirable": lambda dtype: random_rows(8, 2, dtype, labels=torch.ones(8, dtype=torch.bool)),
    "all_undesirable": lambda dtype: random_rows(8, 3, dtype, kl_shift=0.02, labels=torch.zeros(8, dtype=torch.bool)),
    "edges": edge_rows,
}
SETTINGS = {"default": {}, "beta=2,weights": {"beta": 2.0, "desirable_weight": 1.33, "undesirable_weight": 0.5}}


def close(ours, theirs, dtype):
    theirs = torch.as_tensor(theirs, dtype=ours.dtype)
    tol = 1e-9 if dtype == torch.float64 else 2e-6
    assert torch.isfinite(ours).all() and torch.allclose(ours, theirs, rtol=tol, atol=tol), (ours - theirs).abs().max()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_loss_and_reference_point_equal_trl(case, setting, dtype):
    rows, kw = CASES[case](dtype), SETTINGS[setting]
    obj = KTO(**kw)
    ours = rows.ours(obj)
    n = rows.lengths.numel()
    # per row: main batch = row i, KL batch = the whole batch (z depends on the KL rows only)
    per_row, zs = [], []
    for i in range(n):
        trainer = trl_kto(**kw)
        per_row.append(KTOTrainer._compute_loss(trainer, rows.model([i]), rows.trl_inputs([i]), return_outputs=False))
        zs.append(trainer._metrics["train"]["kl"][-1])
    close(ours.loss, torch.stack(per_row), dtype)
    close(ours.metrics["kl"], torch.tensor(zs, dtype=torch.float64), dtype)
    if case == "clamped":
        assert (ours.metrics["kl"] == 0).all()
    # the batch loss: TRL's mean over the batch = assay's mean aggregator
    everything = list(range(n))
    close(obj.aggregate(ours), KTOTrainer._compute_loss(trl_kto(**kw), rows.model(everything), rows.trl_inputs(everything), False), dtype)


def test_stand_in_trainer_reads_only_what_kto_trainer_sets():
    """The stand-in's attributes are ones KTOTrainer.__init__ sets (a TRL upgrade that renames one fails here)."""
    import inspect

    init = inspect.getsource(KTOTrainer.__init__)
    for attr in ("beta", "loss_type", "desirable_weight", "undesirable_weight", "calculate_KL", "precompute_ref_logps",
                 "aux_loss_enabled", "_metrics", "_total_train_tokens", "_tp_size"):
        assert f"self.{attr} =" in init, attr


# ---- the whole path on a tiny model: assay's data, cache and objective vs TRL with a live reference ---


def test_objective_on_a_model_equals_trl(tmp_path):
    from assay.objectives import reference
    from tests.unit.objectives.test_trl_parity import VOCAB, add_fused_lm_head, tiny

    policy, ref = tiny(0), tiny(1)
    add_fused_lm_head(policy, outputs=("log_probs", "entropy", "mean_logits"))
    add_fused_lm_head(ref)
    rows = rows_of([(1, 9), (3, 2), (2, 5), (4, 1), (1, 12), (2, 3)], seed=4, vocab=VOCAB)
    ds = with_kl_completions(datasets.Dataset.from_list(rows), batch_size=6, max_length=64)
    splits, _ = reference.attach_reference_logps(ref, datasets.DatasetDict({"train": ds}), 0, 4, tmp_path)
    batch = Collator(0, "unpaired", with_generation=False)([splits["train"][i] for i in range(len(rows))])
    obj = KTO(beta=1.0, desirable_weight=1.2)
    with torch.no_grad():
        ours = obj.compute(policy, batch)

    def pad(seqs, masks):
        t = max(len(s) for s in seqs)
        return (torch.tensor([s + [0] * (t - len(s)) for s in seqs]), torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs]),
                torch.tensor([m + [0] * (t - len(m)) for m in masks]))

    r = splits["train"]
    ids, att, comp = pad([p + c for p, c in zip(r["prompt_ids"], r["completion_ids"])],
                         [[0] * len(p) + [1] * len(c) for p, c in zip(r["prompt_ids"], r["completion_ids"])])
    kl_ids, kl_att, kl_comp = pad([p + c for p, c in zip(r["prompt_ids"], r["kl_completion_ids"])],
                                  [[0] * len(p) + [1] * len(c) for p, c in zip(r["prompt_ids"], r["kl_completion_ids"])])
    inputs = {"input_ids": ids, "attention_mask": att, "completion_mask": comp, "label": torch.tensor(r["label"]),
              "KL_input_ids": kl_ids, "KL_attention_mask": kl_att, "KL_completion_mask": kl_comp}
    trainer = trl_kto(beta=1.0, desirable_weight=1.2, model=policy, ref_model=ref)
    with torch.no_grad():
        theirs = KTOTrainer._compute_loss(trainer, policy, inputs, return_outputs=False)
    assert float(ours.metrics["kl"][0]) == pytest.approx(trainer._metrics["eval"]["kl"][-1], abs=1e-5)  # the models are in eval mode
    assert float(obj.aggregate(ours)) == pytest.approx(float(theirs), abs=1e-5)
    assert ours.loss.std() > 1e-3
