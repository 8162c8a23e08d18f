"""LQS (DELT): the co-state sweep by hand, the Hessian-vector product against the explicit Hessian,
and the scorer end to end on the skills pool."""

from dataclasses import dataclass

import datasets
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.errors import UserError
from assay.selection import SelectionContext
from assay.selection.scorers.gradient_scores import CLUES
from assay.dynamics.checkpoints import in_training_order
from assay.selection.scorers.lqs import LQS, hessian_vector_product, learnability_quality
from assay.models.passes import padded_batches


@dataclass
class Quadratic:
    """One checkpoint of a 2-D problem with everything explicit: L_dev(θ) = ½‖θ‖² (so ∇L_dev = θ),
    training-loss Hessian H = diag(2, 1), and the pool's per-sample gradients given as rows."""

    lr: float
    theta: tuple
    pool_grads: list
    calls: list

    def dev_grad(self):
        return torch.tensor(self.theta, dtype=torch.float32)

    def hvp(self, v):
        self.calls.append(("hvp", self.theta, v.tolist()))
        return torch.tensor([2.0, 1.0]) * v

    def pool_terms(self, v):
        g = torch.tensor(self.pool_grads, dtype=torch.float32)
        return g @ v, g.norm(dim=1)


def test_costate_sweep_by_hand():
    # Checkpoints θ_0 = (1, 0), θ_1 = (0, 1), θ_2 = (1, 1) with η = 1, 0.5, 0.1; pool of three examples.
    #   λ_2 = ∇L_dev(θ_2) = (1, 1)
    #   ct(1) = η_1 ‖λ_2‖ (‖g(θ_1)‖ / 1) cos(g(θ_1), λ_2)           (G initialised to 1)
    #   λ_1 = λ_2 + ∇L_dev(θ_1) − η_1 H λ_2 = (1, 1) + (0, 1) − 0.5 (2, 1) = (0, 1.5)
    #   ct(0) = η_0 ‖λ_1‖ (‖g(θ_0)‖ / ‖g(θ_1)‖) cos(g(θ_0), λ_1)
    # A: g(θ_1) = (2, 0), g(θ_0) = (0, 4): ct(1) = 0.5·√2·2·(2/(2√2)) = 1;  ct(0) = 1·1.5·(4/2)·1 = 3  → 4
    # B: g(θ_1) = (0, 3), g(θ_0) = (1, 1): ct(1) = 0.5·√2·3·(1/√2) = 1.5; ct(0) = 1.5·(√2/3)·(1/√2) = 0.5 → 2
    # C: g(θ_1) = (0, 0), g(θ_0) = (0, 2): ct(1) = 0; no later gradient keeps G = 1: ct(0) = 1.5·2·1 = 3 → 3
    calls = []
    ckpts = [
        Quadratic(1.0, (1.0, 0.0), [[0, 4], [1, 1], [0, 2]], calls),
        Quadratic(0.5, (0.0, 1.0), [[2, 0], [0, 3], [0, 0]], calls),
        Quadratic(0.1, (1.0, 1.0), [[9, 9], [9, 9], [9, 9]], calls),  # the last checkpoint only sets λ_T
    ]
    asked = []

    def at(t):
        asked.append(t)
        return ckpts[t]

    gamma = learnability_quality(3, at)
    assert gamma.tolist() == pytest.approx([4.0, 2.0, 3.0])
    assert asked == [2, 1, 0]  # one backward sweep, latest first
    assert calls == [("hvp", (0.0, 1.0), [1.0, 1.0])]  # H_1 λ_2 only: λ_0 is never read
    # One checkpoint: the one-step limit η ⟨g(θ), ∇L_dev(θ)⟩ (A: 0.5 ⟨(2, 0), (0, 1)⟩ = 0, B: 0.5·3)
    assert learnability_quality(1, lambda t: ckpts[1]).tolist() == pytest.approx([0.0, 1.5, 0.0])


def tiny(dtype=torch.float32):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=64))
    return model.to(dtype)


def split(n, prefix, seed):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(n)],
        "source": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
        "prompt_ids": [[1] + rng.integers(2, 24, int(rng.integers(2, 5))).tolist() for _ in range(n)],
        "completion_ids": [rng.integers(2, 24, int(rng.integers(1, 4))).tolist() + [2] for _ in range(n)],
    })


def test_hessian_vector_product_matches_the_explicit_hessian():
    from torch.func import functional_call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny(torch.float64)
    names = ["model.layers.1.post_attention_layernorm.weight", "model.norm.weight"]  # 32 parameters
    ds = split(7, "h", 3)
    shapes = [model.get_parameter(n).shape for n in names]
    flat0 = torch.cat([model.get_parameter(n).detach().reshape(-1) for n in names])

    def loss(flat):
        # the mean over examples of each example's mean response NLL, written out independently
        params, start = {}, 0
        for n, shape in zip(names, shapes):
            params[n] = flat[start : start + shape.numel()].view(shape)
            start += shape.numel()
        logits = functional_call(model, params, args=(), kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        keep = (targets != -100).double()
        logp = logits.log_softmax(-1).gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2)
        return (-(logp * keep).sum(1) / keep.sum(1)).mean()

    batch = next(padded_batches(ds, 0, len(ds)))
    with sdpa_kernel(SDPBackend.MATH):
        hessian = torch.autograd.functional.hessian(loss, flat0, vectorize=True)
    assert torch.allclose(hessian, hessian.T, atol=1e-10) and hessian.abs().max() > 1e-5
    v = torch.randn(len(flat0), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hv = hessian_vector_product(model, ds, 0, names, v, batch_size=3)  # batches of 3, 3, 1: weighted by size
    assert torch.allclose(hv.double(), hessian @ v, rtol=1e-6, atol=1e-9)


def test_single_checkpoint_is_the_target_gradient_inner_product():
    train = split(10, "t", 0)
    c = SelectionContext(train, datasets.DatasetDict({"train": train, "val": split(4, "v", 1)}), tiny(), type("Tok", (), {"pad_token_id": 0})())
    # λ = ∇L_dev = mean target gradient, η = 1: CLUES's single-checkpoint score, ⟨g_x, mean target gradient⟩
    assert np.allclose(LQS(seed=0).score(c), CLUES().score(c), rtol=1e-4, atol=1e-8)


def test_checkpoints_in_step_order(tmp_path):
    names = ["epoch=0-step=12.ckpt", "epoch=0-step=6.ckpt", "epoch=1-step=24.ckpt", "epoch=0-step=18.ckpt"]
    assert [p.name for p in in_training_order([tmp_path / n for n in names])] == [
        "epoch=0-step=6.ckpt", "epoch=0-step=12.ckpt", "epoch=0-step=18.ckpt", "epoch=1-step=24.ckpt"]


def test_no_checkpoints_is_a_one_line_user_error(tmp_path):
    train = split(4, "t", 0)
    c = SelectionContext(train, datasets.DatasetDict({"train": train, "val": split(2, "v", 1)}), tiny(), type("Tok", (), {"pad_token_id": 0})())
    with pytest.raises(UserError, match=r"selection.dynamics_from=.*has no checkpoints") as err:
        LQS(dynamics_from=str(tmp_path / "nowhere"), seed=0).select(c)
    assert "\n" not in str(err.value)


def skills_pool(compose_cfg, n_train, n_eval):
    """A tokenized skills pool with a share of corrupted completions (``is_corrupted``), and its model."""
    from assay.config import validate
    from assay.data import build_examples
    from assay.data.collate import tokenize_split

    spec = validate(compose_cfg(["noise=corrupt", "noise.p=0.3", f"data.max_train_examples={n_train}", f"data.max_eval_examples={n_eval}"]))
    examples = build_examples(spec.data, spec.mixture, spec.noise)
    model, tokenizer = spec.model.build(examples.splits)
    d = spec.data
    splits = datasets.DatasetDict({s: tokenize_split(ds, tokenizer, d.format, d.separator, d.max_length) for s, ds in examples.splits.items()})
    return SelectionContext(splits["train"], splits, model, tokenizer)


def test_end_to_end_over_a_warmup_trajectory(tmp_path, compose_cfg):
    """A short warm-up writes three Lightning-style checkpoints; the scorer's γ equals the recursion
    recomputed here from the shared gradient primitive and a finite-difference Hessian-vector product."""
    import copy

    from assay.models.grads import gradient_features
    from assay.selection.scorers.lqs import mean_response_loss

    ctx = skills_pool(compose_cfg, 48, 16)
    pad = ctx.tokenizer.pad_token_id
    model = ctx.model
    # Warm-up: Adam on the pool; checkpoints after steps 4, 8, 12 with the learning rates the recursion
    # reads. η_1 is large so that the η_1 H_1 λ_2 term moves the scores well beyond the tolerance below
    # (the Hessian block of one norm weight is small).
    (tmp_path / "checkpoints").mkdir()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    eta0, eta1 = 1.0, 20.0
    lrs = {4: eta0, 8: eta1, 12: 0.25}
    frozen = dict(model.named_buffers())
    for step in range(1, 13):
        batch = next(padded_batches(ctx.train.select(range((step * 8) % 48, (step * 8) % 48 + 8)), pad, 8))
        opt.zero_grad()
        mean_response_loss(model, dict(model.named_parameters()), frozen, batch["input_ids"], batch["labels"]).backward()
        opt.step()
        if step in lrs:
            state = {"model." + k: v.clone() for k, v in model.state_dict().items()}
            torch.save({"state_dict": state, "lr_schedulers": [{"_last_lr": [lrs[step]]}]}, tmp_path / "checkpoints" / f"step={step:06d}.ckpt")
    torch.save(torch.load(tmp_path / "checkpoints" / "step=000012.ckpt", weights_only=False), tmp_path / "checkpoints" / "last.ckpt")

    scorer = LQS(dynamics_from=str(tmp_path), params=["model.norm."], hessian_examples=16, seed=0)
    sel = scorer.select(ctx)
    assert sel.scores.shape == (48,) and np.isfinite(sel.scores).all() and sel.kept.sum() == 24
    from sklearn.metrics import roc_auc_score

    flagged = np.asarray(ctx.train["is_corrupted"], dtype=bool)
    assert sel.metadata["detection"]["is_corrupted"]["auroc"] == pytest.approx(roc_auc_score(flagged, -sel.scores))

    # The same recursion from independent pieces: the weights θ_0, θ_1, θ_2 (steps 4, 8, 12) loaded by hand.
    states = [torch.load(tmp_path / "checkpoints" / f"step={s:06d}.ckpt", weights_only=False)["state_dict"] for s in (4, 8, 12)]
    probe = copy.deepcopy(model)
    hessian_rows = scorer.hessian_sample(ctx.train)

    def at(t, ds, shift=None):
        state = {k[len("model."):]: v for k, v in states[t].items()}
        if shift is not None:
            state["model.norm.weight"] = state["model.norm.weight"] + shift.float()
        probe.load_state_dict(state)
        return gradient_features(probe, ds, pad, ["model.norm.weight"], 8).double()

    target = ctx.splits["val"]
    lam2 = at(2, target).mean(0)                                              # λ_2 = ∇L_dev(θ_2)
    g1, g0 = at(1, ctx.train), at(0, ctx.train)
    eps = 1e-2 / lam2.norm()
    hvp = (at(1, hessian_rows, eps * lam2).mean(0) - at(1, hessian_rows, -eps * lam2).mean(0)) / (2 * eps)
    lam1 = lam2 + at(1, target).mean(0) - eta1 * hvp                          # λ_1 = λ_2 + ∇L_dev(θ_1) − η_1 H_1 λ_2
    expected = eta1 * g1 @ lam2 + eta0 * (g0 @ lam1) / g1.norm(dim=1)         # G_x = ‖g_x(θ_1)‖ for the θ_0 term
    assert np.allclose(sel.scores, expected.numpy(), rtol=1e-4, atol=1e-4 * np.abs(expected.numpy()).max())
    without_hessian = eta1 * g1 @ lam2 + eta0 * (g0 @ (lam1 + eta1 * hvp)) / g1.norm(dim=1)
    assert not np.allclose(sel.scores, without_hessian.numpy(), rtol=1e-2, atol=1e-2 * np.abs(expected.numpy()).max())
