"""EK-FAC through kronfluence on a toy where it is exact, and the language-model task the LDS uses.

The toy: one bias-free linear layer w ∈ ℝᵈ, squared loss L_i = ½(wᵀx_i − y_i)², w = 0, labels y_i = ±1.
The layer's per-example gradient is g_i·x_iᵀ with g_i = ∂L_i/∂(wᵀx_i) and its Kronecker factors are
A = mean_i x_i x_iᵀ and S = mean_i g_i². When every g_i² = 1, S = 1 and EK-FAC's refitted eigenvalues
Λ_k = mean_i g_i² (q_kᵀx_i)² = q_kᵀ A q_k are A's own eigenvalues: EK-FAC *is* the Gauss-Newton
Hessian H = A of the mean loss, with no approximation. g_i² = 1 holds (a) with the empirical Fisher,
since at w = 0 the residual is g_i = −y_i = ∓1, and (b) with the "sampled" Fisher when the label is
drawn as wᵀx + ε with a Rademacher ε (variance 1, like the unit Gaussian noise model, and ε² = 1 on
every draw, so there is no Monte-Carlo error). Then, with the measurement m(z) = −wᵀx_z (lower =
better, like the NLL the LDS task measures), the score is

    s(z, i) = ∇m(z)ᵀ (H + λI)⁻¹ ∇L_i = (−x_z)ᵀ (A + λI)⁻¹ (−y_i x_i) = y_i x_zᵀ (A + λI)⁻¹ x_i.
"""

import numpy as np
import pytest

from assay.attribution.lds import evaluate, lds, random_subsets
from assay.errors import UserError


def squared_loss_task():
    import torch
    from kronfluence.task import Task

    class SquaredLoss(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            f = model(x).squeeze(-1)
            if sample:
                y = f.detach() + (2 * torch.randint(0, 2, f.shape) - 1).float()  # Rademacher: (f − y)² = 1
            return 0.5 * ((f - y) ** 2).sum()

        def compute_measurement(self, batch, model):
            return -model(batch[0]).sum()

    return SquaredLoss()


def linear_scores(x, y, xz, damping, empirical_fisher):
    import torch
    from torch import nn

    from assay.attribution.ekfac import influence_scores

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 1, bias=False))  # kronfluence wraps children, not the root
    nn.init.zeros_(model[0].weight)
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)
    train = torch.utils.data.TensorDataset(f32(x), f32(y))
    query = torch.utils.data.TensorDataset(f32(xz), torch.zeros(len(xz)))
    return influence_scores(model, squared_loss_task(), train, query, damping=damping,
                            empirical_fisher=empirical_fisher, batch_size=8)


@pytest.mark.parametrize("empirical_fisher", [True, False])
def test_ekfac_of_one_linear_layer_is_the_exact_damped_influence(empirical_fisher):
    pytest.importorskip("kronfluence")
    rng = np.random.default_rng(0)
    n, t, d, lam = 40, 30, 5, 0.1
    x, y, xz = rng.standard_normal((n, d)), rng.choice([-1.0, 1.0], n), rng.standard_normal((t, d))
    scores = linear_scores(x, y, xz, lam, empirical_fisher)
    a = x.T @ x / n
    exact = (xz @ np.linalg.solve(a + lam * np.eye(d), x.T)) * y  # [t, n]: y_i x_zᵀ (A + λI)⁻¹ x_i
    # kronfluence keeps gradients and factors in float32 (eigendecomposition in float64): the error is
    # a few float32 ulps times cond(A + λI) (< 10 here), ~1e-6 relative; 1e-5 of the largest score.
    assert scores.shape == (t, n)
    assert np.abs(scores - exact).max() < 1e-5 * np.abs(exact).max()
    # the damping is what it says: without it (λ → 0) the scores move to the undamped solve
    undamped = (xz @ np.linalg.solve(a, x.T)) * y
    assert np.abs(scores - undamped).max() > 1e-2 * np.abs(exact).max()


def test_ekfac_with_whitened_inputs_is_the_one_step_influence_and_scores_lds_one():
    # lds.py's linear toy (tests/unit/attribution/test_lds.py): one gradient step of size η from w = 0
    # on the subset's squared loss gives w(S) = η Σ_{i∈S} y_i x_i, so the output ⟨w(S), x_z⟩ is exactly
    # linear in S with τ(z)_i = η y_i ⟨x_i, x_z⟩. With whitened inputs (A = XᵀX/n = I), EK-FAC's score
    # y_i x_zᵀ (A + λI)⁻¹ x_i is that τ divided by η(1 + λ): the same ranking, LDS = 1 exactly.
    pytest.importorskip("kronfluence")
    rng = np.random.default_rng(1)
    n, t, d, eta, lam = 40, 30, 5, 0.1, 0.05
    q, _ = np.linalg.qr(rng.standard_normal((n, d)))
    x, y, xz = np.sqrt(n) * q, rng.choice([-1.0, 1.0], n), rng.standard_normal((t, d))
    scores = linear_scores(x, y, xz, lam, empirical_fisher=False)
    exact = eta * (xz @ (y[:, None] * x).T)
    assert np.abs(scores * eta * (1 + lam) - exact).max() < 1e-5 * np.abs(exact).max()
    masks = random_subsets(n, 60, seed=1)
    measured = (eta * masks.astype(float) @ (y[:, None] * x)) @ xz.T  # [m, t]: f_j(z) = ⟨w(S_j), x_z⟩
    r = lds(scores, masks, measured)
    assert r.mean == pytest.approx(1.0) and r.low == pytest.approx(1.0)


def test_language_model_task_measures_the_loss_the_lds_negates(monkeypatch):
    pytest.importorskip("kronfluence")
    import torch

    from assay.attribution.ekfac import pad_collate, response_nll_task
    from assay.attribution.lds import TinyTraining, skills_task, test_losses
    from assay.data.collate import IGNORE
    from assay.models.grads import row_losses

    train, test, tok = skills_task(10, 6, seed=0)
    model = TinyTraining(epochs=1).init(len(tok)).eval()
    task, batch = response_nll_task(), pad_collate(0)([test[i] for i in range(len(test))])
    with torch.no_grad():
        measurement = float(task.compute_measurement(batch, model))
        true_labels = float(task.compute_train_loss(batch, model, sample=False))
        # the Fisher's labels: a "draw" that always gives token 5 must replace exactly the response
        # tokens (prompt and padding stay ignored)
        monkeypatch.setattr(torch, "multinomial", lambda p, k: torch.full((p.shape[0], k), 5, dtype=torch.long))
        sampled = float(task.compute_train_loss(batch, model, sample=True))
        fives = torch.where(batch["labels"] != IGNORE, 5, IGNORE)
        by_hand = float(row_losses(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, fives).sum())
    # the measurement is Σ_z of the mean response NLL that f_j(z) = −loss negates
    assert measurement == pytest.approx(test_losses(model, test).sum(), rel=1e-5)
    assert true_labels == pytest.approx(measurement, rel=1e-6)
    assert sampled == pytest.approx(by_hand, rel=1e-6) and sampled != pytest.approx(true_labels, rel=1e-4)
    assert task.get_attention_mask(batch) is batch["attention_mask"]


def test_missing_kronfluence_is_one_line_before_any_training(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "kronfluence", None)  # import kronfluence now raises ImportError
    with pytest.raises(UserError) as e:
        evaluate(20, 4, 50, ["random", "ekfac"])
    assert "\n" not in str(e.value) and "--no-deps kronfluence" in str(e.value)
