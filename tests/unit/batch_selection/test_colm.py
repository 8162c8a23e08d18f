"""CoLM's coreset numerics against hand-derived numbers: facility location by lazy greedy, the
per-source budgets, the Adam normalisation, the per-source top-d coordinates, the zeroth-order
estimate against the exact directional derivative, and the bad inputs."""

import math

import pytest
import torch

from assay.batch_selection.colm import CoLM
from assay.batch_selection.coreset_selector import CoresetSelector, adam_state, last_v_projection
from assay.batch_selection.coreset import (adam_normalise, coreset_positions, cosine_similarity, facility_location, source_budgets,
                                           top_coordinates, zo_gradients)
from assay.config import validate
from assay.errors import UserError

SIM = torch.tensor([[1.0, 0.9, 0.1, 0.0],
                    [0.9, 1.0, 0.2, 0.0],
                    [0.1, 0.2, 1.0, 0.3],
                    [0.0, 0.0, 0.3, 1.0]])


def test_facility_location_on_a_four_point_matrix():
    # empty set: gains are the column sums 2.0, 2.1, 1.6, 1.3 -> 1; nearest = (.9, 1, .2, 0)
    # gains 0.1, -, 0.8+0.3=1.1, 0.1+1=1.1: a tie, the lower index -> 2; nearest = (.9, 1, 1, .3)
    # gains 0.1, -, -, 0.7 -> 3
    assert facility_location(SIM, 3) == [1, 2, 3]
    assert facility_location(SIM, 9) == [1, 2, 3, 0]  # never more than there are


def plain_greedy(sim: torch.Tensor, k: int) -> list[int]:
    chosen: list[int] = []
    value = lambda s: float(sim[:, s].max(dim=1).values.clamp_min(0).sum()) if s else 0.0  # noqa: E731
    for _ in range(k):
        gains = [(value(chosen + [j]) - value(chosen), -j) for j in range(sim.shape[0]) if j not in chosen]
        chosen.append(-max(gains)[1])
    return chosen


def test_lazy_greedy_picks_what_plain_greedy_picks_with_negative_similarities():
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    sim = cosine_similarity(x)
    assert (sim < 0).any()
    assert facility_location(sim, 5) == plain_greedy(sim, 5)


def test_budgets_keep_small_sources_whole_and_split_the_rest_proportionally():
    # c: 1/20 = 5% < 10% kept whole; room 7 over a (14) and b (5): floors 5 and 1, the one left to b (smaller floor)
    assert source_budgets(["a"] * 14 + ["b"] * 5 + ["c"], 8, 0.10) == (["c"], {"a": 5, "b": 2})
    # x (1) and y (3) are small, but only x fits a coreset of 2; y competes with a for the last slot (floors 0, 0: a by name)
    assert source_budgets(["a"] * 16 + ["x"] + ["y"] * 3, 2, 0.2) == (["x"], {"a": 1, "y": 0})
    assert source_budgets(["a"] * 4, 2, 0.05) == ([], {"a": 2})


def test_adam_normalisation_by_hand():
    g = torch.tensor([[2.0, -1.0]])
    # t = 2: m = .9*.5 + .1*2 = .65 and .9*0 + .1*(-1) = -.1; v = .99*1 + .01*4 = 1.03 and .01
    u = adam_normalise(g, torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.0]), 1, (0.9, 0.99), 0.0)
    expected = [(0.65 / 0.19) / math.sqrt(1.03 / 0.0199), (-0.1 / 0.19) / math.sqrt(0.01 / 0.0199)]
    torch.testing.assert_close(u, torch.tensor([expected]), rtol=1e-6, atol=0)
    # before the first step (no moments) the update is g/(|g| + eps): the sign of g
    torch.testing.assert_close(adam_normalise(torch.tensor([[3.0, -0.5]]), None, None, 0, (0.9, 0.999), 1e-8), torch.tensor([[1.0, -1.0]]))


def test_adam_state_reads_the_optimizers_moments():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=0.1, betas=(0.8, 0.9), eps=1e-6)
    assert adam_state(opt, [p])[:3] == (None, None, 0)
    p.grad = torch.tensor([1.0, -2.0])
    opt.step()
    m, v, step, betas, eps = adam_state(opt, [p])
    torch.testing.assert_close(m, torch.tensor([0.2, -0.4]))
    torch.testing.assert_close(v, torch.tensor([0.1, 0.4]))
    assert (step, betas, eps) == (1, (0.8, 0.9), 1e-6)


def test_top_coordinates_per_source():
    reps = torch.tensor([[1.0, -3.0, 0.5], [1.0, -1.0, 0.5], [0.0, 1.0, 4.0]])
    # source a: |mean| = (1, 2, .5) -> coordinates 1, 0; source b: (0, 1, 4) -> 2, 1
    assert top_coordinates(reps, ["a", "a", "b"], 2).tolist() == [[-3.0, 1.0], [-1.0, 1.0], [4.0, 1.0]]


def test_zo_estimate_is_the_directional_derivative_times_z():
    """Per example L_i(W) = ½‖W x_i‖² + 0.3 (W x_i)₁³: c_i against <∇L_i, z> (the central difference is exact
    for the quadratic, O(ε²) for the cubic) and against the finite difference itself; W is restored exactly."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, dtype=torch.float64, generator=gen)
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    start = w.clone()

    def losses(weight=w):
        y = x @ weight.T
        return 0.5 * y.square().sum(1) + 0.3 * y[:, 0] ** 3

    eps = 1e-4
    est = zo_gradients([w], losses, eps, torch.Generator().manual_seed(7))
    assert torch.equal(w, start)
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float32).double()
    y = x @ w.T
    grads = y[:, :, None] * x[:, None, :]  # ∇L_i = y_i x_iᵀ + 0.9 y_i1² e_1 x_iᵀ
    grads[:, 0, :] += 0.9 * y[:, :1] ** 2 * x
    c_true = (grads * z).sum((1, 2))
    torch.testing.assert_close(est.double(), c_true[:, None] * z.flatten()[None, :], rtol=1e-5, atol=1e-6)
    c_fd = (losses(w + eps * z) - losses(w - eps * z)) / (2 * eps)
    torch.testing.assert_close(est.double(), c_fd[:, None] * z.flatten()[None, :], rtol=1e-6, atol=1e-7)
    # averaged over many directions the estimate approaches the gradient itself (E[z zᵀ] = I)
    many = zo_gradients([w], losses, eps, torch.Generator().manual_seed(0), directions=4000)
    assert torch.nn.functional.cosine_similarity(many, grads.flatten(1)).min() > 0.97


def test_z_is_redrawn_every_step_unless_fixed():
    draw = lambda sel, step: torch.randn(3, generator=sel.generator(step))  # noqa: E731
    redrawn, fixed = CoresetSelector(CoLM(), 4, seed=1), CoresetSelector(CoLM(fixed_direction=True), 4, seed=1)
    assert not torch.equal(draw(redrawn, 0), draw(redrawn, 1)) and torch.equal(draw(redrawn, 5), draw(redrawn, 5))
    assert torch.equal(draw(fixed, 0), draw(fixed, 9))


def test_coreset_keeps_the_small_source_and_covers_both_clusters():
    sources = ["big"] * 6 + ["tiny"]
    reps = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 1.0], [0.0, 0.9]])
    asked = []

    def representations(candidates):
        asked.append(candidates)
        return reps[candidates]

    chosen = coreset_positions(sources, 3, 0.2, 2, representations)
    assert asked == [[0, 1, 2, 3, 4, 5]]  # the kept source is not a candidate
    assert 6 in chosen and len(chosen) == 3
    assert len({i // 3 for i in chosen if i < 6}) == 2  # one medoid from each cluster
    assert coreset_positions(sources[:3], 3, 0.2, 2, representations) == [0, 1, 2]  # a short last batch is kept whole


def test_the_tracked_parameters_are_the_last_v_projection():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2))
    assert last_v_projection(base) == [base.model.layers[1].self_attn.v_proj.weight]
    lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["v_proj"]))
    v = lora.base_model.model.model.layers[1].self_attn.v_proj
    assert last_v_projection(lora) == [v.lora_A["default"].weight, v.lora_B["default"].weight]
    with pytest.raises(UserError, match="has none"):
        last_v_projection(torch.nn.Linear(2, 2))


def test_bad_input_is_one_line(compose_cfg):
    with pytest.raises(UserError, match=r"batch_selection.ratio=0.5: the coreset .* would be larger than its batch") as err:
        validate(compose_cfg(["batch_selection=colm", "batch_selection.ratio=0.5"]))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="trainer.accumulate_grad_batches=1"):
        validate(compose_cfg(["batch_selection=colm", "objective=beta_dpo", "data.format=preference", "trainer.accumulate_grad_batches=2"]))
    assert validate(compose_cfg(["batch_selection=colm", "batch_selection.ratio=4"])).batch_selection.drawn(8) == 32



def test_the_blocks_below_run_once_and_the_losses_are_those_of_the_whole_model():
    """BelowOnce (the authors' efficient path): after its first call only the last block reruns, and every
    perturbed loss (here two calls of the model per loss, as KTO's KL pass) equals the whole model's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from assay.batch_selection.coreset_selector import BelowOnce

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2,
                                         num_key_value_heads=2)).eval()
    x, y = torch.randint(0, 20, (3, 5)), torch.randint(0, 20, (2, 4))
    calls = []
    model.model.layers[0].register_forward_hook(lambda *a: calls.append(1))

    def losses():
        return torch.cat([model(input_ids=x).logits.mean((1, 2)), model(input_ids=y).logits.mean((1, 2))])

    fast = BelowOnce(model, losses)
    params = last_v_projection(model)
    with torch.no_grad():
        est = zo_gradients(params, fast, 1e-2, torch.Generator().manual_seed(1), directions=2)
        plain = zo_gradients(params, losses, 1e-2, torch.Generator().manual_seed(1), directions=2)
    assert len(calls) == 2 + 2 * 4  # the first of four loss calls ran block 0 (twice); BelowOnce's three others did not
    torch.testing.assert_close(est, plain)
    assert all(type(b).__name__ == "LlamaDecoderLayer" for b in model.model.layers)  # the blocks are back


@pytest.mark.parametrize("adam", [True, False])
def test_the_selector_matches_adam_updates_or_raw_estimates(adam):
    """The selector's coreset is facility location on the ZO estimates of the last v_proj (z from the
    step's seed), Adam-normalised with the optimizer's moments when ``adam`` and raw otherwise."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.v_proj = torch.nn.Linear(3, 2, bias=False)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    scale = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0, -2.0])
    loss = lambda batch: scale * model.v_proj(x).pow(2).sum(1) + model.v_proj(x)[:, 0]  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    loss(None).sum().backward()
    opt.step()
    selector = CoresetSelector(CoLM(adam=adam, small_share=0.0), 2, seed=4)
    chosen = selector.positions(model, {"sources": ["a"] * 6}, loss, opt, step=3)
    raw = zo_gradients([model.v_proj.weight], lambda: loss(None), 1e-3, selector.generator(3))
    m, v, taken, betas, eps = adam_state(opt, [model.v_proj.weight])
    reps = adam_normalise(raw, m, v, taken, betas, eps) if adam else raw
    assert chosen == coreset_positions(["a"] * 6, 2, 0.0, 512, lambda c: reps[c]) == ([2, 5] if adam else [0, 3])  # the flag changes the coreset
    assert selector.last["a"] == 2 and selector.last["drawn"] == 6
    assert not torch.allclose(cosine_similarity(adam_normalise(raw, m, v, taken, betas, eps)), cosine_similarity(raw))
