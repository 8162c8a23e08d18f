"""Every preference loss TRL has, against TRL's own code (the ``test`` extra installs it), to float rounding.

TRL 1.16 computes the DPO losses inside ``DPOTrainer._compute_loss``, from a model's per-token
log-probs. The loss tests call that method unbound, with a stand-in ``self`` carrying the settings
it reads and a stand-in model returning chosen per-token log-probs (TRL's fused LM head output),
so TRL's formulas run as written: one pair per call gives TRL's per-pair loss, compared with
assay's; the sorted (AOT) losses are compared on whole batches. cDPO and SimPO are TRL's
``CPOTrainer.cpo_loss`` (sigmoid with label smoothing, simpo), ORPO's odds-ratio term
``ORPOTrainer.odds_ratio_loss``. LD-DPO and WPO need the model itself: a tiny Llama with TRL's fused
LM head runs through ``_compute_loss`` (policy and live reference) and through assay's objective
(both batch layouts, reference log-probs from assay's cache).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from types import SimpleNamespace

import datasets
import pytest
import torch

trl = pytest.importorskip("trl", reason="TRL is the reference implementation of these losses: pip install -e '.[test]'")
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402
from trl.trainer.utils import add_fused_lm_head  # noqa: E402

from assay.data.collate import Collator  # noqa: E402
from assay.objectives import reference  # noqa: E402
from assay.objectives.losses.aot import AOT  # noqa: E402
from assay.objectives.losses.aot_unpaired import AOTUnpaired  # noqa: E402
from assay.objectives.losses.apo_down import APODown  # noqa: E402
from assay.objectives.losses.apo_zero import APOZero  # noqa: E402
from assay.objectives.losses.bco_pair import BCOPair  # noqa: E402
from assay.objectives.losses.cdpo import ConservativeDPO  # noqa: E402
from assay.objectives.losses.discopop import DiscoPOP  # noqa: E402
from assay.objectives.losses.dpo import DPO  # noqa: E402
from assay.objectives.losses.exo_pair import EXOPair  # noqa: E402
from assay.objectives.losses.hinge import Hinge  # noqa: E402
from assay.objectives.losses.ipo import IPO  # noqa: E402
from assay.objectives.losses.mpo import MPO  # noqa: E402
from assay.objectives.losses.nca_pair import NCAPair  # noqa: E402
from assay.objectives.losses.orpo import ORPO  # noqa: E402
from assay.objectives.losses.rdpo import RobustDPO  # noqa: E402
from assay.objectives.losses.sigmoid_norm import SigmoidNorm  # noqa: E402
from assay.objectives.losses.simpo import SimPO  # noqa: E402
from assay.objectives.losses.sppo_hard import SPPOHard  # noqa: E402
from assay.objectives.preference import PairScores  # noqa: E402


def test_trl_is_the_pinned_reference():
    major, minor = (int(x) for x in trl.__version__.split(".")[:2])
    assert (major, minor) >= (1, 16) and major < 2, trl.__version__


# ---- the inputs: per-token log-probs of pairs ----------------------------------------------------


class Pairs:
    """Per-token log-probs of B pairs (policy and reference, chosen and rejected) with their lengths,
    as TRL's fused LM head returns them ([2B, T-1], chosen rows first, 0 off the completion)."""

    def __init__(self, policy: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor):
        self.policy, self.ref, self.lengths = policy, ref, lengths  # [2B, T-1] each; lengths [2B]
        self.mask = torch.arange(policy.shape[1])[None, :] < lengths[:, None]

    @property
    def n(self) -> int:
        return self.lengths.numel() // 2

    def pair(self, i: int) -> "Pairs":
        rows = torch.tensor([i, self.n + i])
        return Pairs(self.policy[rows], self.ref[rows], self.lengths[rows])

    def scores(self) -> PairScores:
        p, r = (x.masked_fill(~self.mask, 0).sum(1).chunk(2) for x in (self.policy, self.ref))
        c, rj = self.lengths.to(self.policy.dtype).chunk(2)
        return PairScores(p[0], p[1], c, rj, r[0], r[1])


def random_pairs(n: int, seed: int, dtype=torch.float64, max_len: int = 40) -> Pairs:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (2 * n,), generator=g)
    policy = -torch.rand(2 * n, max_len, generator=g, dtype=dtype) * 3
    ref = policy + torch.randn(2 * n, max_len, generator=g, dtype=dtype) * 0.3
    return Pairs(policy, ref, lengths)


def edge_pairs(dtype=torch.float64) -> Pairs:
    """Margins h = ±50 and ±0 at response lengths 1 and 500 (every combination), and a pair at certainty."""
    rows = []  # (chosen length, rejected length, chosen log-ratio, rejected log-ratio)
    for lc, lr in ((1, 1), (1, 500), (500, 1), (500, 500)):
        for rc, rr in ((25.0, -25.0), (-25.0, 25.0), (0.0, 0.0), (50.0, 0.0), (0.0, -50.0), (-0.5, 0.25)):
            rows.append((lc, lr, rc, rr))
    width = 500
    n = len(rows)
    lengths = torch.tensor([r[0] for r in rows] + [r[1] for r in rows])
    ref = torch.full((2 * n, width), -60.0, dtype=dtype)  # every policy token log-prob stays < 0
    ratio = torch.tensor([r[2] for r in rows] + [r[3] for r in rows], dtype=dtype)
    # spread each response's log-ratio over its tokens (policy = ref + ratio/length per token)
    policy = ref + (ratio / lengths.to(dtype))[:, None]
    policy[0, :] = -1e-9  # a chosen response at near-certainty (ORPO's odds)
    return Pairs(policy, ref, lengths)


CASES = {"random": lambda dtype: random_pairs(24, seed=0, dtype=dtype), "edges": edge_pairs}


# ---- TRL's DPOTrainer._compute_loss with a stand-in trainer and model -------------------------


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    gather = gather_for_metrics


def trl_trainer(loss_type, loss_weights=None, beta=0.1, label_smoothing=0.0, discopop_tau=0.05, ld_alpha=None,
                use_weighting=False, model=None, ref_model=None) -> SimpleNamespace:
    """The attributes ``DPOTrainer._compute_loss`` reads, as ``DPOTrainer.__init__`` sets them from a DPOConfig."""
    types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    return SimpleNamespace(
        model=model if model is not None else SimpleNamespace(training=True), ref_model=ref_model, accelerator=_Accelerator(),
        args=SimpleNamespace(discopop_tau=discopop_tau, gradient_checkpointing_kwargs=None), beta=beta,
        loss_types=types, loss_weights=loss_weights or [1.0] * len(types), label_smoothing=label_smoothing, ld_alpha=ld_alpha,
        use_weighting=use_weighting, f_divergence_type="reverse_kl", precompute_ref_logps=ref_model is None,
        aux_loss_enabled=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )


class LogpsModel:
    """Stands for a model with TRL's fused LM head: returns the given per-token log-probs."""

    def __init__(self, pairs: Pairs):
        self.pairs = pairs

    def __call__(self, **kwargs):
        lp = self.pairs.policy.masked_fill(~self.pairs.mask, 0)
        zeros = torch.zeros_like(lp)
        return SimpleNamespace(log_probs=lp, entropy=zeros, mean_logits=zeros, is_top1=torch.zeros_like(lp, dtype=torch.bool),
                               log_sum_sq_probs=zeros, aux_loss=None)


def trl_inputs(pairs: Pairs) -> dict:
    """A batch in TRL's layout: one prompt token, then the completion ([2B, T])."""
    completion = torch.cat([torch.zeros(2 * pairs.n, 1, dtype=torch.long), pairs.mask.long()], dim=1)
    ref = pairs.ref.masked_fill(~pairs.mask, 0).sum(1)
    return {"input_ids": torch.ones_like(completion), "attention_mask": torch.ones_like(completion), "completion_mask": completion,
            "ref_chosen_logps": ref[: pairs.n], "ref_rejected_logps": ref[pairs.n:]}


def trl_loss(trainer: SimpleNamespace, pairs: Pairs) -> torch.Tensor:
    return DPOTrainer._compute_loss(trainer, LogpsModel(pairs), trl_inputs(pairs), return_outputs=False)


def trl_per_pair(trainer_kwargs: dict, pairs: Pairs) -> torch.Tensor:
    return torch.stack([trl_loss(trl_trainer(**trainer_kwargs), pairs.pair(i)) for i in range(pairs.n)])


def close(ours: torch.Tensor, theirs: torch.Tensor, dtype, float32_constants: bool = False) -> None:
    """Equal to float rounding. ``float32_constants``: TRL computes a constant in float32 whatever the
    inputs' dtype (exo_pair's log ε), so float64 inputs agree to float32 rounding of that constant."""
    theirs = theirs.to(ours.dtype)
    assert torch.isfinite(ours).all() and torch.isfinite(theirs).all()
    rtol, atol = (1e-9, 1e-9) if dtype == torch.float64 and not float32_constants else (2e-5, 2e-5)
    err = (ours - theirs).abs().max()
    assert torch.allclose(ours, theirs, rtol=rtol, atol=atol), f"max |assay - TRL| = {err:.3g}"


# (TRL loss_type, its settings) -> assay's objective
PER_PAIR = {
    "sigmoid": ({}, lambda: DPO(beta=0.1)),
    "sigmoid beta=2": ({"beta": 2.0}, lambda: DPO(beta=2.0)),
    "hinge": ({}, lambda: Hinge(beta=0.1)),
    "hinge beta=1": ({"beta": 1.0}, lambda: Hinge(beta=1.0)),
    "ipo": ({}, lambda: IPO(beta=0.1)),
    "exo_pair": ({"label_smoothing": 1e-3}, lambda: EXOPair(beta=0.1, epsilon=1e-3)),
    "exo_pair eps=0.2": ({"label_smoothing": 0.2, "beta": 0.5}, lambda: EXOPair(beta=0.5, epsilon=0.2)),
    "nca_pair": ({}, lambda: NCAPair(beta=0.1)),
    "robust": ({"label_smoothing": 0.1}, lambda: RobustDPO(beta=0.1, epsilon=0.1)),
    "robust eps=0.3": ({"label_smoothing": 0.3, "beta": 0.5}, lambda: RobustDPO(beta=0.5, epsilon=0.3)),
    "bco_pair": ({}, lambda: BCOPair(beta=0.1)),
    "sppo_hard": ({}, lambda: SPPOHard(beta=0.1)),
    "apo_zero": ({}, lambda: APOZero(beta=0.1)),
    "apo_down": ({}, lambda: APODown(beta=0.1)),
    "discopop": ({}, lambda: DiscoPOP(beta=0.1, tau=0.05)),
    "discopop tau=0.5": ({"discopop_tau": 0.5, "beta": 1.0}, lambda: DiscoPOP(beta=1.0, tau=0.5)),
    "sigmoid_norm": ({}, lambda: SigmoidNorm(beta=0.1)),
    "sigmoid_norm beta=5": ({"beta": 5.0}, lambda: SigmoidNorm(beta=5.0)),
    "sft": ({}, lambda: MPO(losses=["sft"], loss_weights=[1.0])),
}
COMBINED = {  # TRL's loss_type lists with loss_weights -> objective=mpo
    "mpo": ((["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]), lambda: MPO()),
    "ipo+hinge": ((["ipo", "hinge"], [0.3, 2.0]), lambda: MPO(losses=["ipo", "hinge"], loss_weights=[0.3, 2.0])),
    "nca+apo_zero+sppo": ((["nca_pair", "apo_zero", "sppo_hard"], None), lambda: MPO(losses=["nca_pair", "apo_zero", "sppo_hard"], loss_weights=[1.0, 1.0, 1.0])),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(PER_PAIR))
def test_per_pair_loss_equals_trl(name, case, dtype):
    settings, make = PER_PAIR[name]
    pairs = CASES[case](dtype)
    loss_type = name.split()[0]
    theirs = trl_per_pair({"loss_type": loss_type, **settings}, pairs)
    ours = make().from_scores(pairs.scores()).loss
    f32 = loss_type == "exo_pair"
    close(ours, theirs, dtype, f32)
    if loss_type == "sft":
        return  # TRL's sft is the mean over every chosen token of the batch, assay's the mean of per-pair token means (mpo's card)
    # the batch loss (assay's mean aggregator, TRL's mean) as well
    obj = make()
    close(obj.aggregate(obj.from_scores(pairs.scores())), trl_loss(trl_trainer(loss_type, **settings), pairs), dtype, f32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(COMBINED))
def test_weighted_combinations_equal_trl_loss_type_lists(name, case, dtype):
    (types, weights), make = COMBINED[name]
    pairs = CASES[case](dtype)
    theirs = trl_per_pair({"loss_type": types, "loss_weights": weights}, pairs)
    close(make().from_scores(pairs.scores()).loss, theirs, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(CASES) + ["ties"])
@pytest.mark.parametrize("loss_type,make", [
    ("aot", lambda eps: AOT(beta=0.1, epsilon=eps)),
    ("aot_unpaired", lambda eps: AOTUnpaired(beta=0.1, epsilon=eps)),
])
@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_sorted_batch_losses_equal_trl(loss_type, make, epsilon, case, dtype):
    """AOT's loss belongs to a rank of the batch: the batch mean is compared (TRL's whole loss)."""
    if case == "ties":
        pairs = random_pairs(8, seed=3, dtype=dtype, max_len=3)
        pairs.policy[:, :] = -1.0  # every policy log-ratio tied
    else:
        pairs = CASES[case](dtype)
    obj = make(epsilon)
    out = obj.from_scores(pairs.scores())
    theirs = trl_loss(trl_trainer(loss_type, label_smoothing=epsilon), pairs)
    close(obj.aggregate(out), theirs, dtype)


# ---- cDPO, SimPO (TRL's CPOTrainer) and ORPO (TRL's ORPOTrainer) ---------------------------------


def cpo_self(loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> SimpleNamespace:
    return SimpleNamespace(loss_type=loss_type, beta=beta, label_smoothing=label_smoothing, simpo_gamma=simpo_gamma, alpha=0.0,
                           accelerator=_Accelerator())


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("epsilon,beta", [(0.1, 0.1), (0.3, 1.0), (0.0, 0.5)])
def test_cdpo_equals_trl_sigmoid_with_label_smoothing(case, epsilon, beta):
    """TRL 1.16's DPO sigmoid has no label smoothing any more; CPO's sigmoid keeps it, on logits
    lp_w - lp_l: given the log-ratios ρ_w, ρ_l its logits are DPO's margin h."""
    s = CASES[case](torch.float64).scores()
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("sigmoid", beta, epsilon), s.chosen_ratio, s.rejected_ratio)
    close(ConservativeDPO(beta=beta, epsilon=epsilon).from_scores(s).loss, theirs, torch.float64)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("beta,gamma", [(2.0, 1.6), (2.5, 1.375), (0.1, 0.0)])
def test_simpo_equals_trl_cpo_simpo(case, beta, gamma):
    s = CASES[case](torch.float64).scores()
    chosen, rejected = s.policy_chosen / s.chosen_tokens, s.policy_rejected / s.rejected_tokens  # CPO's average_log_prob
    theirs, _, _ = CPOTrainer.cpo_loss(cpo_self("simpo", beta, simpo_gamma=gamma), chosen, rejected)
    close(SimPO(beta=beta, gamma=gamma).from_scores(s).loss, theirs, torch.float64)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_odds_ratio_term_equals_trl(case, lam):
    """ORPO = NLL(y_w) per token - λ·log σ(log odds ratio); TRL's odds_ratio_loss returns λ·log σ(...)
    (in float32), the NLL being the mean chosen token log-prob its forward computes."""
    s = CASES[case](torch.float64).scores()
    chosen, rejected = s.policy_chosen / s.chosen_tokens, s.policy_rejected / s.rejected_tokens
    ratio_term = ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=lam, accelerator=_Accelerator()), chosen, rejected)[0]
    ours = ORPO(lam=lam).from_scores(s).loss
    close((ours + chosen).float(), -ratio_term, torch.float32)


# ---- LD-DPO and WPO: a tiny model through TRL's fused LM head and through assay -------------------

VOCAB = 29


def tiny(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # sharper distributions than the initialisation, so the weights and margins move
        model.lm_head.weight.mul_(3.0)
    return model


def token_rows(n: int = 7, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rand = lambda k: torch.randint(3, VOCAB, (k,), generator=g).tolist()  # noqa: E731
    lengths = [(1, 9), (12, 2), (5, 5), (1, 1), (17, 3), (4, 11), (30, 29)]
    return [{"id": str(i), "_row": i, "source": "s", "answer": "", "prompt_ids": rand(1 + i % 4),
             "chosen_ids": rand(lengths[i % 7][0]), "rejected_ids": rand(lengths[i % 7][1])} for i in range(n)]


def trl_token_batch(rows: list[dict]) -> dict:
    seqs, comp = [], []
    for col in ("chosen", "rejected"):
        for r in rows:
            seqs.append(r["prompt_ids"] + r[f"{col}_ids"])
            comp.append([0] * len(r["prompt_ids"]) + [1] * len(r[f"{col}_ids"]))
    t = max(len(s) for s in seqs)
    return {"input_ids": torch.tensor([s + [0] * (t - len(s)) for s in seqs]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs]),
            "completion_mask": torch.tensor([c + [0] * (t - len(c)) for c in comp])}


OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs")


@pytest.fixture(scope="module")
def models():
    policy, ref = tiny(0), tiny(1)
    add_fused_lm_head(policy, outputs=OUTPUTS)  # TRL's: model(..., fused_lm_head=True); without the flag the original forward
    add_fused_lm_head(ref)
    return policy, ref


@pytest.mark.parametrize("share_prompt", [False, True], ids=["two_sequences", "shared_prompt"])
@pytest.mark.parametrize("loss_type,make,settings", [
    ("sigmoid", lambda **kw: DPO(beta=1.0, **kw), {"beta": 1.0}),
    ("ipo", lambda **kw: IPO(beta=0.5, **kw), {"beta": 0.5}),
    ("bco_pair", lambda **kw: BCOPair(beta=1.0, **kw), {"beta": 1.0}),
    ("apo_down", lambda **kw: APODown(beta=1.0, **kw), {"beta": 1.0}),
])
@pytest.mark.parametrize("ld_alpha,wpo", [(None, False), (0.5, False), (0.0, False), (None, True), (0.3, True)],
                         ids=["plain", "ld0.5", "ld0", "wpo", "ld0.3+wpo"])
def test_ld_dpo_and_wpo_on_a_model_equal_trl(models, tmp_path, loss_type, make, settings, ld_alpha, wpo, share_prompt):
    policy, ref = models
    rows = token_rows()
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})
    collation = {"share_prompt": share_prompt, "pack_factor": 2.0}
    splits, _ = reference.attach_reference_logps(ref, splits, 0, 3, tmp_path, collation, heads=ld_alpha is not None)
    obj = make(ld_alpha=ld_alpha, wpo=wpo, share_prompt=share_prompt)
    batch = Collator(0, "preference", with_generation=False, **collation)([splits["train"][i] for i in range(len(rows))])
    with torch.no_grad():
        ours = obj.from_scores(obj.scores(policy, batch)).loss
        theirs = torch.stack([
            DPOTrainer._compute_loss(trl_trainer(loss_type, ld_alpha=ld_alpha, use_weighting=wpo, model=policy, ref_model=ref, **settings),
                                     policy, trl_token_batch([r]), return_outputs=False)
            for r in rows
        ])
    assert theirs.std() > 1e-3  # the pairs differ: the comparison is not between constants
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5), (ours - theirs).abs().max()


def test_ld_alpha_one_is_the_plain_loss_and_zero_drops_the_tail(models, tmp_path):
    policy, ref = models
    rows = token_rows()
    splits, _ = reference.attach_reference_logps(ref, datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}), 0, 3, tmp_path,
                                                 heads=True)
    batch = Collator(0, "preference", with_generation=False, share_prompt=True, pack_factor=2.0)([splits["train"][i] for i in range(len(rows))])
    with torch.no_grad():
        plain = DPO().scores(policy, batch)
        one = DPO(ld_alpha=1.0).scores(policy, batch)
        zero = DPO(ld_alpha=0.0).scores(policy, batch)
    assert torch.allclose(one.policy_chosen, plain.policy_chosen, atol=1e-5) and torch.allclose(one.ref_rejected, plain.ref_rejected, atol=1e-5)
    shorter = torch.tensor([min(len(r["chosen_ids"]), len(r["rejected_ids"])) == len(r["chosen_ids"]) for r in rows])
    # α = 0: the shorter response keeps all its tokens, the longer one only as many
    assert torch.allclose(zero.policy_chosen[shorter], plain.policy_chosen[shorter], atol=1e-5)
    assert not torch.allclose(zero.policy_chosen[~shorter], plain.policy_chosen[~shorter], atol=1e-3)
    assert math.isfinite(float(zero.margin.sum()))


def test_stand_in_trainer_reads_only_what_dpo_trainer_sets():
    """The stand-in's attributes are ones DPOTrainer.__init__ sets (a TRL upgrade that renames one fails here)."""
    import inspect

    init = inspect.getsource(DPOTrainer.__init__)
    for attr in ("loss_types", "loss_weights", "ld_alpha", "f_divergence_type", "label_smoothing", "use_weighting", "beta",
                 "precompute_ref_logps", "aux_loss_enabled", "_metrics", "_total_train_tokens", "_tp_size"):
        assert f"self.{attr} =" in init, attr
    assert copy.copy(trl_trainer("sigmoid")).loss_weights == [1.0]
