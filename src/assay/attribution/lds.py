"""The linear datamodeling score (LDS; Park et al. 2023, TRAK, arXiv 2303.14186, Sec. 2.2; dattri's
``lds`` metric) of the attribution-style scorers, on the skills task with a tiny model.

For a test example z, m random subsets S_1..S_m of the training set (each of α·n examples), the
measured effect f_j(z) and the predicted one g_j(z) = Σ_{i ∈ S_j} τ(z)_i from an attribution vector
τ(z) over the training examples,

    LDS(z) = Spearman ρ over j of (g_j(z), f_j(z)),    LDS = mean over the test examples z.

Sign convention: τ(z)_i > 0 means that training on example i *helps* z, and f_j(z) = −loss(z; θ(S_j))
(mean response NLL, negated), so a good attribution has LDS > 0 (TRAK's sign with the model output
"higher = better"). The scorers' own convention (higher = keep) is kept as is.

Scorers that give one value per training example against a target set (GraNd, EL2N, LESS, Forward-INF,
MATES) have one τ for every test example: the target set is the test set, so τ(z) is that vector for
every z and the per-example LDS compares it with each test example's loss. Beside it,
``lds_target_mean`` is the LDS of the test set as one target (the mean loss; τ averaged over test
examples for the per-example methods): one Spearman over the subsets, without a CI. TracIn (one checkpoint) gives a
per-(train, test) τ(z)_i = ⟨∇ℓ(z_i; θ̂), ∇ℓ(z; θ̂)⟩; EK-FAC (through kronfluence, ``ekfac.py``) puts the
damped inverse of an eigenvalue-corrected Kronecker-factored Fisher between the two gradients.

The confidence interval is a percentile bootstrap of the mean over test examples (resampling test
examples, 2000 resamples).

Subset models: every one starts from the same initialisation (one seed) and sees its examples in the
same order (one fixed permutation of the whole training set, restricted to the subset), for the same
number of epochs, so subsets differ only in which examples they hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from assay.errors import check

ALPHA = 0.5
"""Subset fraction: TRAK's and dattri's LDS use α = 0.5."""
MIN_SUBSETS = 50
"""Fewer subsets than this give a noisy Spearman per test example; a smoke run (``--smoke``) may use fewer."""
MIN_SUBSETS_SMOKE = 3
MIN_TEST = 2
"""A bootstrap over test examples needs at least two."""


# --------------------------------------------------------------------------- the score itself

def random_subsets(n: int, m: int, alpha: float = ALPHA, seed: int = 0) -> np.ndarray:
    """[m, n] boolean masks, each of exactly round(α·n) training examples, drawn independently."""
    check(n >= 2, "train", n, "need at least 2 training examples to draw subsets")
    check(0 < alpha < 1, "alpha", alpha, "must be in (0, 1)")
    k = max(1, min(n - 1, int(round(alpha * n))))
    rng = np.random.default_rng(seed)
    masks = np.zeros((m, n), dtype=bool)
    for j in range(m):
        masks[j, rng.choice(n, size=k, replace=False)] = True
    return masks


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ between a[:, t] and b[:, t] for every column t (NaN where either column is constant)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra, rb = ra - ra.mean(0), rb - rb.mean(0)
    den = np.sqrt((ra**2).sum(0) * (rb**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(0) / np.where(den > 0, den, 1), np.nan)


def lds_per_example(tau: np.ndarray, masks: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """[T] LDS(z) per test example. ``tau``: [T, n] (or [n]: the same vector for every test example),
    ``masks``: [m, n] subsets, ``measured``: [m, T] f_j(z) (higher = better for z)."""
    masks, measured = np.asarray(masks, dtype=float), np.asarray(measured, dtype=float)
    tau = np.asarray(tau, dtype=float)
    if tau.ndim == 1:
        tau = np.broadcast_to(tau, (measured.shape[1], tau.shape[0]))
    if tau.shape != (measured.shape[1], masks.shape[1]) or measured.shape[0] != masks.shape[0]:
        raise ValueError(f"shapes do not match: tau {tau.shape}, masks {masks.shape}, measured {measured.shape}")
    predicted = masks @ tau.T  # [m, T]: g_j(z) = Σ_{i ∈ S_j} τ(z)_i
    return spearman_columns(predicted, measured)


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (resampling them with replacement)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


@dataclass
class LDS:
    mean: float
    low: float
    high: float
    per_example: np.ndarray = field(repr=False)


def lds_target_mean(tau: np.ndarray, masks: np.ndarray, measured: np.ndarray) -> float:
    """The LDS of the test set as one target: Spearman over j of (Σ_{i ∈ S_j} τ̄_i, mean_z f_j(z)),
    τ̄ = τ averaged over test examples (the target-set scorers' own vector). One number, no CI."""
    tau = np.asarray(tau, dtype=float)
    mean_tau = tau.mean(0) if tau.ndim == 2 else tau
    measured = np.asarray(measured, dtype=float).mean(1, keepdims=True)
    return float(spearman_columns(np.asarray(masks, dtype=float) @ mean_tau[:, None], measured)[0])


def lds(tau: np.ndarray, masks: np.ndarray, measured: np.ndarray, seed: int = 0) -> LDS:
    """The LDS (mean over test examples, NaNs of constant predictions dropped) with its bootstrap CI."""
    per = lds_per_example(tau, masks, measured)
    finite = per[np.isfinite(per)]
    lo, hi = bootstrap_ci(finite, seed=seed)
    return LDS(float(finite.mean()) if len(finite) else float("nan"), lo, hi, per)


# --------------------------------------------------------------------------- the skills task, tiny

class WordTokens:
    """The skills symbols are space separated: one id per symbol (pad 0, bos 1, eos 2)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, texts):
        words = sorted({w for t in texts for w in t.split()})
        self.ids = {w: i + 3 for i, w in enumerate(words)}

    def __len__(self) -> int:
        return len(self.ids) + 3

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.split()]


def skills_task(n_train: int, n_test: int, seed: int = 0, domains=("copy", "reverse", "sort", "count", "add")):
    """Tokenized (train, test, tokenizer): ``n_train`` / ``n_test`` skills examples at difficulty 1,
    spread over ``domains`` (disjoint prompts between the splits)."""
    import datasets

    from assay.data.skills import generate_skills

    per = {"train": -(-n_train // len(domains)), "val": -(-n_test // len(domains))}
    rows = generate_skills(list(domains), per, [1], seed)
    tok = WordTokens([r["prompt"] + " " + r["answer"] for s in rows.values() for r in s])

    def table(rs):
        return datasets.Dataset.from_dict({
            "id": [r["id"] for r in rs], "source": [r["source"] for r in rs],
            "prompt_ids": [[tok.bos_token_id] + tok.encode(r["prompt"]) for r in rs],
            "completion_ids": [tok.encode(r["answer"]) + [tok.eos_token_id] for r in rs],
        })

    rng = np.random.default_rng(seed)
    pick = lambda rs, n: [rs[i] for i in sorted(rng.choice(len(rs), size=n, replace=False))]
    return table(pick(rows["train"], n_train)), table(pick(rows["val"], n_test)), tok


@dataclass
class TinyTraining:
    """A few dozen optimizer steps of a two-layer Llama: runs of about a second on a CPU."""

    hidden: int = 32
    layers: int = 2
    epochs: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    seed: int = 0

    def init(self, vocab: int):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(self.seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=self.hidden, intermediate_size=2 * self.hidden,
                                            num_hidden_layers=self.layers, num_attention_heads=2, num_key_value_heads=2,
                                            max_position_embeddings=64))

    def train(self, train, vocab: int, keep: Optional[np.ndarray] = None):
        """The model trained on the examples ``keep`` marks (all when None), in the fixed order."""
        return self.train_with_optimizer(train, vocab, keep)[0]

    def train_with_optimizer(self, train, vocab: int, keep: Optional[np.ndarray] = None):
        """(model, its AdamW optimizer after the last step): MATES's oracle steps from that state."""
        import torch

        from assay.models.passes import pad_rows

        model = self.init(vocab)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0)
        order = np.random.default_rng(self.seed).permutation(len(train))
        if keep is not None:
            order = order[np.asarray(keep, dtype=bool)[order]]
        prompts, responses = train["prompt_ids"], train["completion_ids"]
        model.train()
        for _ in range(self.epochs):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                b = pad_rows([prompts[i] for i in rows], [responses[i] for i in rows], 0)
                loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        return model, opt


def test_losses(model, test, batch_size: int = 64) -> np.ndarray:
    from assay.models.passes import padded_batches
    from assay.models.probe import example_losses

    return example_losses(model, padded_batches(test, 0, batch_size, desc="test losses"))


def measure_subsets(training: TinyTraining, train, test, vocab: int, masks: np.ndarray) -> np.ndarray:
    """[m, T] f_j(z) = −loss(z; θ(S_j)) of every subset model on every test example."""
    from assay.run.progress import track

    out = np.zeros((len(masks), len(test)))
    for j in track(range(len(masks)), "subset models", total=len(masks), unit="model"):
        out[j] = -test_losses(training.train(train, vocab, masks[j]), test)
    return out


# --------------------------------------------------------------------------- attributions

def tracin(ctx) -> np.ndarray:
    """[T, n] TracIn with one checkpoint (Pruthi et al. 2020, arXiv 2002.08895): τ(z)_i = ⟨∇ℓ(z_i), ∇ℓ(z)⟩
    at the full-data model, over the parameters the gradient scorers use (``grad_param_names``: the
    last decoder layer). One SGD step of size η on z_i changes ℓ(z) by −η τ(z)_i to first order."""
    from assay.models.grads import grad_param_names, gradient_features

    names = grad_param_names(ctx.model)
    g_train = gradient_features(ctx.model, ctx.train, 0, names, 16)
    g_test = gradient_features(ctx.model, ctx.splits["val"], 0, names, 16)
    return (g_test.double() @ g_train.double().T).numpy()


def scorer_attribution(name: str, online: bool = False, **kwargs) -> Callable:
    """τ from a registered selection scorer: one value per training example (higher = keep) against
    its target set, the test set (``val``). ``online``: score as during training (MATES's stage 1 at
    the trained model and its optimizer, not its random stage 0)."""

    def run(ctx) -> np.ndarray:
        from assay.registry import discover, options

        discover("assay.selection.scorers")
        scorer = options("selection")[name](seed=0, **kwargs)
        if online:
            scorer = scorer.for_rescoring(None)
        return np.asarray(scorer.score(ctx), dtype=float)

    return run


def random_attribution(ctx) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((len(ctx.splits["val"]), len(ctx.train)))


def ekfac(ctx) -> np.ndarray:
    """[T, n] EK-FAC influence (Grosse et al. 2023, arXiv 2308.03296) through kronfluence: the
    library-backed second-order reference beside TracIn's identity-Hessian dot product (``ekfac.py``)."""
    from assay.attribution.ekfac import ekfac_attribution

    return ekfac_attribution(ctx)


ATTRIBUTIONS: dict[str, Callable] = {
    "random": random_attribution,
    "tracin": tracin,
    "less": scorer_attribution("less"),
    "forward_inf": scorer_attribution("forward_inf"),
    "mates": scorer_attribution("mates", online=True, oracle_size=32),
    "grand": scorer_attribution("grand", prefer="hard"),
    "el2n": scorer_attribution("el2n", prefer="hard"),
    "ekfac": ekfac,
}
"""name -> (SelectionContext: train, splits["val"] = the test set, the full-data model and its
optimizer) -> τ ([T, n] per test example, or [n] against the test set; higher = helps)."""


# --------------------------------------------------------------------------- the evaluation and its CLI

def evaluate(n_train: int, n_test: int, subsets: int, methods: list[str], seed: int = 0, smoke: bool = False,
             training: Optional[TinyTraining] = None) -> list[dict]:
    """One row per method: LDS, its CI, seconds of attribution per training example."""
    check(subsets >= (MIN_SUBSETS_SMOKE if smoke else MIN_SUBSETS), "--subsets", subsets,
          f"need at least {MIN_SUBSETS} subsets for a Spearman per test example (at least {MIN_SUBSETS_SMOKE} with --smoke)")
    check(n_test >= MIN_TEST, "--test", n_test, f"need at least {MIN_TEST} test examples for a bootstrap CI over them")
    check(n_train >= 10, "--train", n_train, "need at least 10 training examples")
    unknown = [m for m in methods if m not in ATTRIBUTIONS]
    check(not unknown, "--methods", unknown, f"must be among {sorted(ATTRIBUTIONS)}")
    if "ekfac" in methods:  # before the subset models are trained, not after
        from assay.attribution.ekfac import require_kronfluence

        require_kronfluence()
    training = training or TinyTraining(seed=seed)
    train, test, tok = skills_task(n_train, n_test, seed)
    vocab = len(tok)
    masks = random_subsets(len(train), subsets, ALPHA, seed)
    measured = measure_subsets(training, train, test, vocab, masks)
    import datasets

    from assay.selection.base import SelectionContext

    full, optimizer = training.train_with_optimizer(train, vocab)
    ctx = SelectionContext(train, datasets.DatasetDict({"train": train, "val": test}), full, tok, optimizer=optimizer)
    rows = []
    for name in methods:
        t0 = time.perf_counter()
        tau = ATTRIBUTIONS[name](ctx)
        seconds = time.perf_counter() - t0
        r = lds(tau, masks, measured, seed)
        rows.append({"method": name, "lds": r.mean, "ci_low": r.low, "ci_high": r.high,
                     "lds_target_mean": lds_target_mean(tau, masks, measured),
                     "per_test_vector": np.asarray(tau).ndim == 2, "s_per_train_example": seconds / len(train)})
    return rows


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    cell = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows])


def write(rows: list[dict], out: Path, header: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "lds.csv", index=False)
    (out / "lds.md").write_text(header + "\n\n" + markdown_table(rows) + "\n")
    fig, ax = plt.subplots(figsize=(1.2 * len(df) + 2, 3))
    ax.bar(df["method"], df["lds"], yerr=[df["lds"] - df["ci_low"], df["ci_high"] - df["lds"]], capsize=4)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("LDS (Spearman, 95% CI)")
    fig.tight_layout()
    fig.savefig(out / "lds.png", dpi=120)
    plt.close(fig)
