"""Forward-INF against hand-derived loss drops of a bigram model.

The toy model's logits at a token x are the row W[x] of one V×V table (W = 0 at the start), so an
example ``prompt [a] → completion [b]`` has loss ℓ = −log softmax(W[a])_b = log V, and its gradient
touches row a only: ∂ℓ/∂W[a] = softmax(W[a]) − e_b = 1/V − e_b. One full-batch step on N target
examples with distinct prompts a₁..a_N moves each row aₖ alone:

- SGD: W[aₖ] = (η/N)(e_bₖ − 1/V), so a duplicate of target k has loss log(e^{η/N} + V − 1) − η/N;
- Adam's first step is lr·sign(g) per coordinate (m̂/√v̂ = g/|g|): W[aₖ] = lr·(2e_bₖ − 1), so a
  duplicate has loss log(1 + (V − 1)e^{−2 lr}).

A training example (c → d) whose prompt c is no target's shares no parameter with the targets: its
loss does not move (score exactly 0). An example (aₖ → e), e ≠ bₖ, is an opponent: under SGD its
loss becomes log(e^{η/N} + V − 1).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from assay.errors import UserError
from assay.selection import SelectionContext
from assay.selection.scorers.forward_inf import ForwardINF

V = 12


class Bigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(V, V))

    def forward(self, input_ids, attention_mask=None, use_cache=False, output_hidden_states=False):
        return SimpleNamespace(logits=self.W[input_ids])


class Tok:
    pad_token_id = 0


def examples(pairs, prefix):
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(len(pairs))],
        "source": ["s"] * len(pairs),
        "prompt_ids": [[a] for a, _ in pairs],
        "completion_ids": [[b] for _, b in pairs],
    })


TARGETS = [(1, 2), (3, 4)]
POOL = [(5, 6), (1, 2), (7, 8), (3, 4), (1, 9), (10, 11), (9, 5)]
DUPLICATES, OPPONENT = [1, 3], 4
UNRELATED = [0, 2, 5, 6]


def context():
    train = examples(POOL, "t")
    return SelectionContext(train, datasets.DatasetDict({"train": train, "val": examples(TARGETS, "v")}), Bigram(), Tok())


def test_sgd_step_matches_the_closed_form():
    eta, n = 0.8, len(TARGETS)
    scores = ForwardINF(optimizer="sgd", lr=eta, batch_size=3).score(context())
    dup = math.log(V) - (math.log(math.exp(eta / n) + V - 1) - eta / n)
    opp = math.log(V) - math.log(math.exp(eta / n) + V - 1)
    assert scores[DUPLICATES] == pytest.approx([dup, dup], abs=1e-6)
    assert scores[OPPONENT] == pytest.approx(opp, abs=1e-6) and opp < 0
    assert scores[UNRELATED] == pytest.approx([0.0] * len(UNRELATED), abs=1e-9)
    assert set(np.argsort(-scores)[:2]) == set(DUPLICATES)  # the duplicates of the targets rank first


def test_adam_first_step_is_a_sign_step():
    lr = 5e-3  # the authors' default
    scores = ForwardINF(batch_size=2).score(context())
    dup = math.log(V) - math.log(1 + (V - 1) * math.exp(-2 * lr))
    assert scores[DUPLICATES] == pytest.approx([dup, dup], rel=1e-4)
    assert scores[UNRELATED] == pytest.approx([0.0] * len(UNRELATED), abs=1e-9)
    assert scores[OPPONENT] < 0


def test_k_sgd_steps_iterate_the_update():
    """K steps: the closed form applied K times (row a of W after each step, by hand in numpy)."""
    eta, k, n = 0.5, 3, len(TARGETS)
    w = np.zeros(V)
    for _ in range(k):
        p = np.exp(w) / np.exp(w).sum()
        w = w - eta / n * (p - np.eye(V)[2])
    after = -(w[2] - np.log(np.exp(w).sum()))
    scores = ForwardINF(optimizer="sgd", lr=eta, steps=k).score(context())
    assert scores[1] == pytest.approx(math.log(V) - after, abs=1e-6)


def test_ascent_and_absolute_flip_and_fold_the_sign():
    c = context()
    descent = ForwardINF(optimizer="sgd", lr=0.8).score(c)
    ascent = ForwardINF(optimizer="sgd", lr=0.8, direction="ascent").score(c)
    # unlearning the targets raises the duplicates' loss: proponents still score high
    assert ascent[DUPLICATES].min() > 0 and set(np.argsort(-ascent)[:2]) == set(DUPLICATES)
    assert ascent[UNRELATED] == pytest.approx([0.0] * len(UNRELATED), abs=1e-9)
    assert np.abs(descent[DUPLICATES] - ascent[DUPLICATES]).max() > 0  # not the same step mirrored
    folded = ForwardINF(optimizer="sgd", lr=0.8, absolute=True).score(c)
    assert folded == pytest.approx(np.abs(descent))


def test_model_untouched_and_cost_reported():
    c = context()
    scorer = ForwardINF(optimizer="sgd", lr=0.8)
    selection = scorer.select(c)
    assert torch.count_nonzero(c.model.W) == 0  # scored on a copy
    cost = selection.metadata["cost"]
    assert cost["seconds"] > 0 and cost["seconds_per_example"] == pytest.approx(cost["seconds"] / len(POOL))
    assert cost["target_examples"] == len(TARGETS) and cost["forward_passes_per_example"] == 2


def test_target_sources_and_bad_fields():
    with pytest.raises(UserError, match="selection.direction"):
        ForwardINF(direction="sideways")
    with pytest.raises(UserError, match="selection.steps"):
        ForwardINF(steps=0)
    with pytest.raises(UserError, match="selection.target_split"):
        ForwardINF(target_split="nope").score(context())
