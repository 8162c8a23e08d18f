"""The query test (Kuditipudi et al. 2025, arXiv 2510.19796, §3, Eq. 2): does a suspect model remember
our run's training *order*? Score every example of our transcript under the suspect (and a reference
model), and correlate with the step at which our run trained on it (:mod:`assay.tracing.statistics`).

Each example's log-likelihood is minus its mean token NLL over the tokens our run trained on (the
response given its prompt): the authors' default metric is the log-perplexity of the whole sequence
(``tracing/query/metrics.py::pplx``); our run's loss never covered the prompt tokens, so they carry no
trace of the order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from assay.errors import UserError, check
from assay.tracing.statistics import decile_curve, spearman_test
from assay.tracing.transcript import Transcript, load_transcript

MIN_EXAMPLES = 20


def load_model(path: str | Path, run_tok, field: str):
    """A suspect or reference model: a model directory (``config.json`` and tokenizer files) or an
    assay run directory (its ``model/``), refused unless it shares the run's tokenizer vocabulary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(path).expanduser()
    if (d / "model" / "config.json").is_file():
        model_dir, tok_dir = d / "model", (d / "tokenizer" if (d / "tokenizer").is_dir() else d / "model")
    elif (d / "config.json").is_file():
        model_dir = tok_dir = d
    else:
        raise UserError(field, str(path), "is not a model directory (config.json) nor an assay run directory (model/config.json)")
    try:
        theirs = AutoTokenizer.from_pretrained(tok_dir).get_vocab()
    except Exception as e:  # no tokenizer files, or unreadable ones: transformers' errors vary by cause
        raise UserError(field, str(path), f"has no readable tokenizer ({type(e).__name__}); the test needs it to check that the "
                        "model shares the run's vocabulary") from None
    ours = run_tok.get_vocab()
    if theirs != ours:
        moved = sum(1 for token, i in ours.items() if theirs.get(token) != i)
        raise UserError(field, str(path), f"has another tokenizer: {len(theirs)} tokens against the run's {len(ours)}, {moved} of the "
                        "run's tokens missing or at another id; the test scores the run's token ids, so the model must share its tokenizer")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    check(model.get_input_embeddings().num_embeddings >= len(ours), field, str(path),
          f"embeds {model.get_input_embeddings().num_embeddings} token ids, fewer than the run's vocabulary of {len(ours)}")
    return model.eval()


def log_likelihoods(model, rows, pad_id: int, batch_size: int, desc: str) -> np.ndarray:
    """[N] minus the mean response NLL of every row (one batched forward pass per batch)."""
    from assay.models.passes import padded_batches
    from assay.models.probe import example_losses

    return -example_losses(model, padded_batches(rows, pad_id, batch_size, desc=desc))


def usable(t: Transcript, min_examples: int, max_examples: Optional[int], seed: int) -> Transcript:
    """The transcript the test reads: refused when the run's order was no random shuffle or too short;
    a seeded uniform subset of ``max_examples`` when it is longer (a subset of a random order is one)."""
    check(t.shuffled, "--run", str(t.run_dir), f"trained in ordering={t.spec.ordering.name}, not a random shuffle: the test's null "
          "(step labels uniformly random) does not hold; test runs trained with ordering=random")
    if max_examples is not None and len(t) > max_examples:
        keep = np.sort(np.random.default_rng(seed).choice(len(t), max_examples, replace=False))
        t = Transcript(t.run_dir, [t.ids[i] for i in keep], t.steps[keep], t.source, t.rows.select(keep.tolist()), t.tokenizer, t.spec, t.shuffled)
    check(len(t) >= min_examples, "--run", str(t.run_dir), f"has {len(t)} trained examples with a recorded step; the test needs at "
          f"least {min_examples} (--min-examples)")
    check(len(np.unique(t.steps)) > 1, "--run", str(t.run_dir), "trained every recorded example at one step: no order to test")
    return t


def plot(steps: np.ndarray, panels: dict[str, np.ndarray], rho: float, p: float, path: Path) -> None:
    """Log-likelihood against training step, one panel per series, with the decile means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels.items()):
        ax.scatter(steps, values, s=6, alpha=0.35, color="tab:blue", label="examples")
        curve = decile_curve(steps, values)
        ax.plot([(c["first_step"] + c["last_step"]) / 2 for c in curve], [c["mean"] for c in curve], "o-", color="tab:red", label="decile mean")
        ax.set_xlabel("training step of the example (our run)")
        ax.set_ylabel(label)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Spearman rho = {rho:.3f}, one-sided p = {p:.2e}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def query(run: str | Path, model: str | Path, reference: Optional[str | Path | list] = None, out: Optional[Path] = None,
          position: str = "last", min_examples: int = MIN_EXAMPLES, max_examples: Optional[int] = None,
          permutations: int = 999, seed: int = 0, batch_size: int = 32) -> dict:
    """The query test's result (also written to ``out/query.json``, ``out/query.png`` and the per-example
    ``out/query_examples.csv`` when ``out`` is given). ``reference``: one model independent of our order,
    or several, whose log-likelihoods are averaged (the authors find averages of models work too)."""
    started = time.perf_counter()
    t = usable(load_transcript(run, position), min_examples, max_examples, seed)
    pad = t.tokenizer.pad_token_id
    suspect = log_likelihoods(load_model(model, t.tokenizer, "--model"), t.rows, pad, batch_size, "suspect log-likelihoods")
    values, panels = suspect, {"log-likelihood under the suspect": suspect}
    references = [] if reference is None else [reference] if isinstance(reference, (str, Path)) else list(reference)
    ref = None
    if references:
        ref = np.mean([log_likelihoods(load_model(r, t.tokenizer, "--reference"), t.rows, pad, batch_size, "reference log-likelihoods")
                       for r in references], axis=0)
        values = suspect - ref
        panels["suspect − reference log-likelihood"] = values
    stats = spearman_test(t.steps, values, permutations, seed)
    curve = {"suspect": decile_curve(t.steps, suspect)}
    if ref is not None:
        curve.update(reference=decile_curve(t.steps, ref), corrected=decile_curve(t.steps, values))
    result = {
        "test": "query", "paper": "arXiv 2510.19796",
        "statistic": "spearman(step, loglik_suspect" + (" - loglik_reference)" if ref is not None else ")"),
        "run": str(Path(run)), "model": str(Path(model)), "reference": [str(Path(r)) for r in references] or None,
        "order_from": t.source, "position": position, "steps": int(t.steps.max()), **stats,
        "p_value_note": "p_value: one-sided (rho > 0), scipy's t approximation of the rank-correlation null under the random "
                        "shuffle; p_value_two_sided: the same, two-sided (the authors' script); p_permutation: Monte Carlo over "
                        "re-permuted step labels, at least 1/(permutations+1)",
        "memorisation_curve": curve,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if out is not None:
        import pandas as pd

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "query.json").write_text(json.dumps(result, indent=2))
        table = {"id": t.ids, "step": t.steps, "loglik_suspect": suspect}
        if ref is not None:
            table["loglik_reference"] = ref
        pd.DataFrame(table).to_csv(out / "query_examples.csv", index=False)
        plot(t.steps, panels, stats["rho"], stats["p_value"], out / "query.png")
        result["files"] = [str(out / f) for f in ("query.json", "query.png", "query_examples.csv")]
    return result
