"""On-policy preference pairs (``data.pairs=on_policy``): two samples of the model a run starts from,
ranked by the task's ground-truth reward.

For every training prompt the starting model (``model.init_from``: the SFT model a DPO run starts from
and is regularised towards) samples ``data.pair_samples`` responses at ``data.pair_temperature``; each
is scored with the skills tasks' reward (``assay.data.rewards.skill_reward``, the one the evaluation's
``answer_reward`` uses). The pair is the first sample and the first later sample whose reward differs
from it, the higher-reward one chosen. So the exact answer is chosen only where the model produced it,
both responses can be wrong, and a flip (``noise=pairwise_flip``) swaps two of the model's own samples.

Ties. Two samples with the same reward carry no preference, and a flip of such a pair changes nothing,
so a tie is never kept as a pair: the second response is re-drawn (the later samples, up to
``pair_samples − 1`` re-draws), and a prompt whose samples all tie (typically: all exact) is dropped.
Dropping rather than keeping a tie with a flag keeps every pair a real preference under the ground
truth, which is what the flip rate and the clean-label losses assume; the share of dropped prompts is
logged and is part of the pilot's report. Empty samples (eos first) are skipped: a pair needs two texts.

Each pair carries ``chosen_reward``, ``rejected_reward`` and ``reward_gap`` (what noise and the
per-sample analyses read, as for rated pairs), ``pair_kind`` (``exact_vs_miss`` when the chosen sample
is the exact answer, ``miss_vs_miss`` otherwise) and ``pair_draws`` (samples drawn to find the pair).

Sampling is batched on the model, seeded by ``data.pair_seed`` (not the run's seed), and cached on disk
under a hash of the model's weights, the settings and the prompts, so every arm and seed of a study
that starts from the same model trains on the same pairs and samples them once.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from assay.data.rewards import skill_reward
from assay.errors import UserError
from assay.lazy import datasets, torch
from assay.models.passes import eval_mode, generate_texts, model_device, weights_digest
from assay.run import log as runlog
from assay.run.progress import track

CACHE = "on_policy_pairs"
"""Sub-directory of ``paths.cache_dir`` holding one JSON file of samples per (model, settings, prompts)."""
PAIR_COLUMNS = ("chosen_reward", "rejected_reward", "reward_gap", "pair_kind", "pair_draws")


def choose_pair(answer: str, samples: list[str]) -> Optional[dict[str, Any]]:
    """The pair of ``samples`` (in draw order): the first non-empty sample against the first later one
    whose ground-truth reward differs; the higher reward is chosen. None when every sample ties."""
    texts = [s.strip() for s in samples if s.strip()]
    if not texts:
        return None
    first, r_first = texts[0], skill_reward(answer, texts[0])
    for j, other in enumerate(texts[1:], start=2):
        r_other = skill_reward(answer, other)
        if r_other != r_first:
            (chosen, rc), (rejected, rr) = sorted([(first, r_first), (other, r_other)], key=lambda t: -t[1])
            return {"chosen": chosen, "rejected": rejected, "chosen_reward": rc, "rejected_reward": rr, "reward_gap": rc - rr,
                    "pair_kind": "exact_vs_miss" if rc == 1.0 else "miss_vs_miss", "pair_draws": j}
    return None


def sample_responses(model, tokenizer, prompt_ids: list[list[int]], samples: int, temperature: float, max_new_tokens: int,
                     seed: int, batch_size: int) -> list[list[str]]:
    """``samples`` sampled responses per prompt (token-id prompts, left-padded in batches of
    ``batch_size`` prompts), each batch seeded by ``seed`` and its index without touching the global
    generator; the evaluation's decoding (``generate_texts``)."""
    device = model_device(model)
    pad = tokenizer.pad_token_id
    out: list[list[str]] = []
    starts = range(0, len(prompt_ids), batch_size)
    with eval_mode(model):
        for b, start in enumerate(track(starts, "on-policy pairs: sampling", unit="batch")):
            rows = prompt_ids[start : start + batch_size]
            width = max(len(p) for p in rows)
            ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in rows], dtype=torch.long, device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], dtype=torch.long, device=device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + b)
                texts = generate_texts(model, tokenizer, ids, mask, max_new_tokens, temperature=temperature, num_return_sequences=samples)
            out.extend(texts[i * samples : (i + 1) * samples] for i in range(len(rows)))
    return out


def cache_key(model, settings: dict, rows: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(weights_digest(model).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(json.dumps(rows).encode())
    return h.hexdigest()[:32]


def on_policy_pairs(train: datasets.Dataset, model, tokenizer, data, max_new_tokens: int, cache_dir: Path,
                    sample: Callable[..., list[list[str]]] = sample_responses) -> datasets.Dataset:
    """``train`` with ``chosen`` / ``rejected`` replaced by on-policy pairs (the module docstring), prompts
    whose samples all tie dropped. ``sample`` draws the responses (tests pass a stand-in sampler)."""
    from assay.data.collate import tokenize_split

    if "answer" not in train.column_names:
        raise UserError("data.pairs", "on_policy", "ranks samples by the ground-truth reward, which needs an 'answer' column (data=skills)")
    settings = {"samples": data.pair_samples, "temperature": data.pair_temperature, "seed": data.pair_seed, "max_new_tokens": max_new_tokens,
                "separator": data.separator, "max_length": data.max_length, "chat_template": data.chat_template}
    key = cache_key(model, settings, list(zip(list(train["id"]), list(train["prompt"]))))
    file = Path(cache_dir) / CACHE / f"{key}.json"
    if file.is_file():
        runlog.info("on-policy pairs: reusing the samples in %s", file)
        drawn = json.loads(file.read_text())["samples"]
    else:
        prompt_ids = list(tokenize_split(train, tokenizer, "preference", data.separator, data.max_length, data.chat_template)["prompt_ids"])
        drawn = sample(model, tokenizer, prompt_ids, data.pair_samples, data.pair_temperature, max_new_tokens, data.pair_seed, data.eval_batch_size)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"settings": settings, "ids": list(train["id"]), "samples": drawn}))
        tmp.replace(file)  # atomic: concurrent runs write the same content under unique temporary names
    keep, pairs = [], []
    for i, (answer, samples) in enumerate(zip(list(train["answer"]), drawn)):
        pair = choose_pair(answer, samples)
        if pair is not None:
            keep.append(i)
            pairs.append(pair)
    if not pairs:
        raise UserError("data.pairs", "on_policy", f"every one of the {len(train)} prompts' {data.pair_samples} samples tie on the reward; "
                        "raise data.pair_samples or data.pair_temperature")
    gaps = [p["reward_gap"] for p in pairs]
    runlog.info("on-policy pairs: %d of %d prompts have a reward gap (%.1f%%; the rest tie and are dropped), mean gap %.3f, chosen exact in %.1f%%",
                len(pairs), len(train), 100 * len(pairs) / len(train), sum(gaps) / len(gaps),
                100 * sum(p["pair_kind"] == "exact_vs_miss" for p in pairs) / len(pairs))
    out = train.select(keep)
    for column in ("chosen", "rejected", *PAIR_COLUMNS):
        if column in out.column_names:
            out = out.remove_columns(column)
        out = out.add_column(column, [p[column] for p in pairs])
    return out
