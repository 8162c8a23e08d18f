"""The observational tests (Kuditipudi et al. 2025, arXiv 2510.19796, §4): only a suspect's *text*.

``partition`` (φ_obs^part, the authors' ``scripts/observation/partition.py`` with ``tracing/index.py``
and ``observation/metrics.py::spearman_matches``; those scripts do not run as stored, so this is
re-implemented from them): index our run's training examples by their n-grams; at every position of
each text line find the longest n-gram (k tokens down to 2) that occurs in some training example
and credit one match to every example containing it; c_s = matches on the examples trained at step
s; statistic ρ_S(s, c_s) over all steps. Null: the example → step map re-permuted. No retraining.

``reshuffle`` (φ_obs^shuff, ``scripts/observation/tinystories.py``): restore our run's checkpoint at
the start of its last phase (weights and AdamW moments), retrain that phase m + 1 times through one
loop — once in the order the run used, m times in fresh uniform shuffles of the same examples — and
score the text under each model (mean over lines of the summed log-probability of each line's tokens
after the first ``prompt_tokens``; the authors score 32 sampled tokens after a 20-token prompt). Under
H₀ the m + 1 models are exchangeable, so the real order's rank is an exact p-value. The real order is
retrained by the same loop as the shuffles (the authors' last shuffle also re-runs the real order),
so the run's own final model, trained by Lightning, is not one of the m + 1.
Cost: (m + 1) × (steps of the phase) optimizer steps, plus (m + 1) forward passes over the text.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from assay.errors import UserError, check
from assay.tracing.statistics import partition_test, rank_test
from assay.tracing.transcript import Transcript

METHODS = ("partition", "reshuffle")


def read_lines(path: str | Path, tokenizer, separator: str = " ") -> list[tuple[list[int], list[int]]]:
    """(prompt tokens, continuation tokens) of every non-empty line. A line ``prompt<TAB>continuation``
    is a sample and the prompt it was generated from (tokenized as our run tokenized prompt and
    response, joined by the data's ``separator``); a line without a tab is all continuation."""
    p = Path(path).expanduser()
    check(p.is_file(), "--text", str(path), "is not a file (one text sample per line)")
    lines = [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    check(len(lines) > 0, "--text", str(path), "has no text (one sample per line)")
    out = []
    for line in lines:
        prompt, tab, rest = line.partition("\t")
        if not tab:
            out.append(([], tokenizer(line, add_special_tokens=False)["input_ids"]))
        else:
            out.append((tokenizer(prompt, add_special_tokens=True)["input_ids"], tokenizer(separator + rest, add_special_tokens=False)["input_ids"]))
    return out


# ---- partition ------------------------------------------------------------------------------------
def ngram_index(docs: list[list[int]], k: int) -> dict[tuple, np.ndarray]:
    """n-gram (2 <= n <= k tokens) -> the documents containing it."""
    index: dict[tuple, set] = {}
    for d, tokens in enumerate(docs):
        for n in range(2, k + 1):
            for pos in range(len(tokens) - n + 1):
                index.setdefault(tuple(tokens[pos:pos + n]), set()).add(d)
    return {g: np.fromiter(s, dtype=np.int64) for g, s in index.items()}


def document_hits(index: dict[tuple, np.ndarray], lines: list[list[int]], n_docs: int, k: int) -> np.ndarray:
    """Per document, how many of the text's longest matches it contains."""
    hits = np.zeros(n_docs)
    for tokens in lines:
        for pos in range(len(tokens) - 1):
            for n in range(min(k, len(tokens) - pos), 1, -1):
                docs = index.get(tuple(tokens[pos:pos + n]))
                if docs is not None:
                    hits[docs] += 1
                    break
    return hits


def partition(t: Transcript, text: str | Path, k: int = 8, permutations: int = 999, seed: int = 0) -> dict:
    col = [c for c in t.rows.column_names if c.endswith("_ids") and c != "prompt_ids"][0]
    docs = [p + r for p, r in zip(t.rows["prompt_ids"], t.rows[col])]
    lines = [p + c for p, c in read_lines(text, t.tokenizer, t.spec.data.separator)]
    hits = document_hits(ngram_index(docs, k), lines, len(docs), k)
    stats = partition_test(hits, t.steps, permutations, seed)
    return {"method": "partition", "k": k, "text_lines": len(lines), "text_tokens": int(sum(len(x) for x in lines)),
            "documents": len(docs), **stats,
            "statistic": "spearman(step, matches of the text's longest n-grams in the examples trained at that step)"}


# ---- reshuffle ------------------------------------------------------------------------------------
def text_score(model, lines: list[tuple[list[int], list[int]]], prompt_tokens: int, pad_id: int, batch_size: int = 32) -> float:
    """Mean over lines of the summed log-probability of each line's continuation given its prompt (the
    authors' ``experiment_metric``); a line without a prompt is scored after its first ``prompt_tokens``
    tokens (at least 1: the first token has no context)."""
    from assay.data.collate import IGNORE
    from assay.models.grads import row_losses
    from assay.models.passes import eval_mode, forward, pad_rows

    def split(prompt, rest):
        cut = max(1, prompt_tokens)
        return (prompt, rest) if prompt else (rest[:cut], rest[cut:])

    kept = [x for x in (split(*line) for line in lines) if x[1]]
    check(len(kept) > 0, "--prompt-tokens", prompt_tokens, "leaves no token to score in any line of the text")
    total = 0.0
    with eval_mode(model):
        for start in range(0, len(kept), batch_size):
            chunk = kept[start:start + batch_size]
            batch = pad_rows([x[0] for x in chunk], [x[1] for x in chunk], pad_id)
            mean_nll = row_losses(forward(model, batch).logits, batch["labels"])
            counts = (batch["labels"][:, 1:] != IGNORE).sum(1)
            total += float(-(mean_nll.double().cpu() * counts).sum())
    return total / len(kept)


def phase_checkpoint(run: Path, from_step: Optional[int], last_step: int) -> tuple[Path, int]:
    """The kept checkpoint the last phase restarts from: ``from_step``'s, or the latest before the run's last step."""
    kept = {int(p.stem.split("=")[1]): p for p in (run / "checkpoints").glob("step=*.ckpt")}
    if from_step is not None:
        check(from_step in kept, "--from-step", from_step, f"has no kept checkpoint; the run kept steps {sorted(kept)} "
              "(train with keep_checkpoints=true checkpoint_every_n_steps=<n>)")
        return kept[from_step], from_step
    kept = {s: p for s, p in kept.items() if s < last_step}
    if not kept:
        raise UserError("--run", str(run), "kept no checkpoint before its last step to restart its last phase from; the reshuffle "
                        "test needs one with its optimizer state (train with keep_checkpoints=true checkpoint_every_n_steps=<n>)")
    step = max(kept)
    return kept[step], step


def retrain_phase(run: Path, t: Transcript, ckpt: Path, batches: list[list[int]], seed: int):
    """The run's model restored from ``ckpt`` (weights and AdamW state), trained on ``batches`` (lists
    of transcript rows, one optimizer step each) with the run's objective, learning-rate schedule and
    gradient clipping. Deterministic given ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    from assay.data.collate import Collator
    from assay.module import lr_multiplier
    from assay.registry import from_saved

    raw = t.spec.raw
    objective = from_saved("objective", raw.objective)
    check(not objective.needs_reference, "--run", str(run), f"trained objective={objective.name}, which needs a reference model; the "
          "reshuffle test retrains runs whose objective needs none (sft)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    check(not unexpected and all("lm_head" in m for m in missing), "--run", str(run),
          f"its checkpoint does not match its model ({len(missing)} missing, {len(unexpected)} unexpected weights; LoRA runs are not supported)")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(raw.optim.lr), betas=tuple(raw.optim.betas), weight_decay=float(raw.optim.weight_decay))
    opt.load_state_dict(state["optimizer_states"][0])
    # an epoch-only run's length was set from its data (trainer.max_epochs): its summary has the steps it planned and ran
    total = raw.trainer.max_steps if raw.trainer.max_steps is not None else json.loads((run / "summary.json").read_text())["global_step"]
    mult = lr_multiplier(str(raw.optim.schedule), int(raw.optim.warmup_steps), int(total))
    clip = raw.trainer.get("gradient_clip_val")
    collate = Collator(t.tokenizer.pad_token_id, str(raw.data.format), with_generation=False, **objective.collation)
    rows = t.rows.add_column("_row", list(range(len(t.rows)))) if "_row" not in t.rows.column_names else t.rows
    start = int(state["global_step"])
    torch.manual_seed(seed)
    model.train()
    for k, chunk in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = float(raw.optim.lr) * mult(start + k)
        columns = rows[[int(i) for i in chunk]]
        batch = collate([{c: columns[c][j] for c in columns} for j in range(len(chunk))])
        loss = objective.aggregate(objective.compute(model, batch, training=True, controller=None))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, float(clip))
        opt.step()
    return model.eval()


def replay_error(model, run: Path) -> float:
    """Largest absolute difference between the real-order retrain and the run's own final weights: how
    exactly the loop replays the run's last phase (not needed for the test's validity, which only asks
    that the m + 1 retrains share one procedure)."""
    from transformers import AutoModelForCausalLM

    final = AutoModelForCausalLM.from_pretrained(run / "model").state_dict()
    return float(max((v - final[k]).abs().max() for k, v in model.state_dict().items() if k in final))


def reshuffle(t: Transcript, text: str | Path, shuffles: int = 9, from_step: Optional[int] = None, prompt_tokens: int = 0,
              seed: int = 0) -> dict:
    check(shuffles >= 1, "--shuffles", shuffles, "must be at least 1 (the smallest exact p is 1/(shuffles+1))")
    started = time.perf_counter()
    ckpt, step0 = phase_checkpoint(t.run_dir, from_step, int(t.steps.max()))
    phase = np.flatnonzero(t.steps > step0)
    check(len(phase) > 0, "--from-step", step0, f"is the run's last step: no phase after it to retrain (last step {int(t.steps.max())})")
    lines = read_lines(text, t.tokenizer, t.spec.data.separator)
    # the real order: the phase's examples grouped by the step that trained them
    real = [phase[t.steps[phase] == s].tolist() for s in np.unique(t.steps[phase])]
    sizes = [len(b) for b in real]
    rng = np.random.default_rng(seed)
    scores = []
    for j in range(shuffles + 1):
        if j == 0:
            batches = real
        else:
            perm = rng.permutation(phase)
            batches = np.split(perm, np.cumsum(sizes)[:-1])
        model = retrain_phase(t.run_dir, t, ckpt, batches, seed)
        scores.append(text_score(model, lines, prompt_tokens, t.tokenizer.pad_token_id))
        if j == 0:
            replay = replay_error(model, t.run_dir)
        del model
    seconds = time.perf_counter() - started
    return {"method": "reshuffle", "from_step": step0, "phase_steps": len(real), "phase_examples": int(len(phase)),
            "text_lines": len(lines), **rank_test(scores[0], np.asarray(scores[1:])),
            "statistic": "log-likelihood of the text under the phase retrained in the real order, ranked among shuffles",
            "replay_error": replay,
            "cost": {"seconds": round(seconds, 2), "optimizer_steps": (shuffles + 1) * len(real),
                     "seconds_per_retrain": round(seconds / (shuffles + 1), 2)}}
