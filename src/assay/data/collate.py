"""Tokenization and collation for the three formats (sft, preference, unpaired).

A training row becomes ``prompt + separator + response + eos``; loss is taken on the response and
eos only. Preference batches come in one of two layouts, both scored by one forward pass:

- two sequences per pair: chosen rows stacked on rejected rows (``[2B, T]``), each ``prompt + response``;
- shared prompt (Wang et al. 2024, "Accelerating Direct Preference Optimization with Prefix
  Sharing", arXiv 2410.20305): one segment ``prompt + chosen + rejected`` per pair, in which the
  rejected tokens see the prompt and themselves but not the chosen tokens, and continue the prompt's
  positions. A pair then costs P + C + R tokens instead of 2P + C + R padded to a common length.
  Segments are packed whole into rows (first fit, longest first), so short pairs share a row
  instead of padding to the longest; the attention mask keeps segments apart.

Evaluation batches also carry the left-padded prompt for greedy generation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from assay.lazy import datasets, torch
from assay.data.noise import FLAGS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE = -100

REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_chosen_head_logps", "ref_rejected_head_logps", "ref_logps", "ref_KL_logps")
"""Per-pair reference log-probs (``assay.objectives.reference``) a batch carries where the rows have
them; of an unpaired row, its completion's and its mismatched (KL) completion's."""
REFERENCE_TOKENS = "ref_token_logps"
"""SFT rows (RHO-1): the reference log-prob of each completion token (a list per row); a batch carries
them as a [B, T-1] tensor aligned with the targets ``labels[:, 1:]`` (0 off the completion)."""
KL_COMPLETION = "kl_completion_ids"
"""Unpaired rows: the token ids of another row's completion, which KTO's reference point pairs with
this row's prompt (TRL's ``KL_completion_ids``)."""


def single_response(data_format: str) -> bool:
    """True for the formats with one response per row (sft, unpaired)."""
    return data_format in ("sft", "unpaired")

# Token roles in the shared-prompt layout (``part``): which tokens a token may attend to.
PAD, PROMPT, CHOSEN, REJECTED = -1, 0, 1, 2


def tokenize_split(
    ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, data_format: str, separator: str, max_length: int, chat_template: str = "messages",
    kl_batch_size: int = 64,
) -> datasets.Dataset:
    """Token ids of every row: ``prompt_ids`` and one ``<response>_ids`` per response (ending in eos).

    With a chat template (``chat_template``: ``messages`` for conversation rows, ``always`` for every
    row, and only when the tokenizer has one) the prompt is the conversation rendered up to the
    assistant's turn (``add_generation_prompt``) and the response is what the template adds for the
    reply (its content and end-of-turn marker), as TRL's prompt-completion format tokenizes it; the
    loss stays on those response tokens only. Otherwise ``prompt + separator + response + eos``.

    Unpaired rows also get ``kl_completion_ids`` (``with_kl_completions``, in chunks of ``kl_batch_size``).
    """
    responses = ("completion",) if single_response(data_format) else ("chosen", "rejected")
    templated = chat_template != "never" and getattr(tokenizer, "chat_template", None) is not None
    templated = templated and (chat_template == "always" or "prompt_messages" in ds.column_names)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        if templated:
            out = _encode_chat(batch, tokenizer, responses)
        else:
            out = {"prompt_ids": tokenizer(batch["prompt"], add_special_tokens=True)["input_ids"]}
            for col in responses:
                ids = tokenizer([separator + t for t in batch[col]], add_special_tokens=False)["input_ids"]
                out[f"{col}_ids"] = [x + [tokenizer.eos_token_id] for x in ids]
        # Fit into max_length: keep the whole response when possible, cut the prompt from the left.
        for i, p in enumerate(out["prompt_ids"]):
            longest = max(len(out[f"{c}_ids"][i]) for c in responses)
            room = max(1, max_length - longest)
            out["prompt_ids"][i] = p[-room:]
            for c in responses:
                out[f"{c}_ids"][i] = out[f"{c}_ids"][i][: max_length - len(out["prompt_ids"][i])]
        return out

    ds = ds.map(encode, batched=True, desc="tokenizing", load_from_cache_file=False)
    return with_kl_completions(ds, kl_batch_size, max_length) if data_format == "unpaired" else ds


def with_kl_completions(ds: datasets.Dataset, batch_size: int, max_length: int) -> datasets.Dataset:
    """KTO's mismatched pairs (Ethayarajh et al. 2024, arXiv 2402.01306, §4.1), as TRL builds them: the
    completions rotated by one within each run of ``batch_size`` rows, (x_1, y_n), (x_2, y_1), ...,
    (x_n, y_{n-1}); each cut to fit ``max_length`` after its prompt (TRL cuts the KL sequence at
    max_length too). A run of one row pairs the row with itself, as in TRL."""

    def rotate(batch: dict[str, list]) -> dict[str, list]:
        shifted = batch["completion_ids"][-1:] + batch["completion_ids"][:-1]
        return {KL_COMPLETION: [c[: max(1, max_length - len(p))] for p, c in zip(batch["prompt_ids"], shifted)]}

    return ds.map(rotate, batched=True, batch_size=max(1, batch_size), desc="mismatched (KL) completions", load_from_cache_file=False)


def _encode_chat(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, responses: tuple[str, ...]) -> dict[str, list]:
    from assay.errors import UserError

    conversations = batch.get("prompt_messages") or [[{"role": "user", "content": p}] for p in batch["prompt"]]
    conversations = [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]
    prompts = tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)
    out = {"prompt_ids": tokenizer(prompts, add_special_tokens=False)["input_ids"]}
    eos = tokenizer.eos_token
    for col in responses:
        full = tokenizer.apply_chat_template(
            [c + [{"role": "assistant", "content": r}] for c, r in zip(conversations, batch[col])], tokenize=False
        )
        tails = []
        for prompt, text in zip(prompts, full):
            if not text.startswith(prompt):
                raise UserError("data.chat_template", "messages", "the tokenizer's chat template does not render a reply as a continuation of the prompt; use data.chat_template=never")
            tails.append(text[len(prompt):].rstrip())  # the template's trailing newline after end-of-turn is not trained on
        ids = tokenizer(tails, add_special_tokens=False)["input_ids"]
        out[f"{col}_ids"] = [x if (eos and t.endswith(eos)) else x + [tokenizer.eos_token_id] for x, t in zip(ids, tails)]
    return out


class Collator:
    """Pads a list of tokenized rows into the tensors the objectives and evaluation read.

    ``share_prompt`` (preference data only) selects the shared-prompt layout; ``pack_factor`` is
    then the row capacity in units of the batch's longest segment (0: one segment per row).
    """

    def __init__(self, pad_id: int, data_format: str, with_generation: bool, share_prompt: bool = False, pack_factor: float = 0.0):
        self.pad_id, self.format, self.with_generation = pad_id, data_format, with_generation
        self.share_prompt, self.pack_factor = share_prompt and data_format == "preference", pack_factor
        self.responses = ["completion"] if single_response(data_format) else ["chosen", "rejected"]

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "ids": [r["id"] for r in rows],
            "index": torch.tensor([r["_row"] for r in rows], dtype=torch.long),
            "sources": [r["source"] for r in rows],
        }
        if self.share_prompt:
            batch.update(shared_prompt_layout(rows, self.pad_id, self.pack_factor))
        else:
            seqs, labels = [], []
            for col in self.responses:  # chosen block first, then rejected block
                for r in rows:
                    seqs.append(r["prompt_ids"] + r[f"{col}_ids"])
                    labels.append([IGNORE] * len(r["prompt_ids"]) + r[f"{col}_ids"])
            batch.update(_pad_right(seqs, labels, self.pad_id))
        if REFERENCE_TOKENS in rows[0] and not self.share_prompt and self.format == "sft":
            batch[REFERENCE_TOKENS] = _target_aligned([len(r["prompt_ids"]) for r in rows], [r[REFERENCE_TOKENS] for r in rows],
                                                      batch["input_ids"].shape[1] - 1)
        if self.format == "unpaired" and KL_COMPLETION in rows[0]:  # KTO's mismatched (prompt, completion) sequences
            kl = _pad_right([r["prompt_ids"] + r[KL_COMPLETION] for r in rows],
                            [[IGNORE] * len(r["prompt_ids"]) + r[KL_COMPLETION] for r in rows], self.pad_id)
            batch.update({f"kl_{k}": v for k, v in kl.items()})
        for flag in (*FLAGS, *REFERENCE_COLUMNS, "weight", *(("label",) if self.format == "unpaired" else ())):
            if flag in rows[0]:
                batch[flag] = torch.tensor([r[flag] for r in rows])
        if self.with_generation:
            batch.update(pad_left([r["prompt_ids"] for r in rows], self.pad_id))
            batch["answers"] = [r["answer"] for r in rows]
        return batch


def _target_aligned(prompt_lengths: list[int], values: list[list[float]], width: int) -> torch.Tensor:
    """[B, width] per-token values of each row's completion at the target positions that predict them:
    completion token j of a row with a prompt of p tokens is the target at position p - 1 + j (the
    first token of a completion after an empty prompt has no predictor and is left out)."""
    out = torch.zeros(len(values), width)
    for b, (p, v) in enumerate(zip(prompt_lengths, values)):
        start = p - 1
        v = torch.as_tensor(v, dtype=torch.float32)
        if start < 0:
            v, start = v[1:], 0
        out[b, start:start + v.numel()] = v
    return out


def _pad_right(seqs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    # Pad as Python lists and convert each field once: one tensor per row would cost a conversion
    # (and an allocation) per sequence.
    t = max(len(s) for s in seqs)
    return {
        "input_ids": torch.tensor([s + [pad_id] * (t - len(s)) for s in seqs], dtype=torch.long),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs], dtype=torch.long),
        "labels": torch.tensor([l + [IGNORE] * (t - len(l)) for l in labels], dtype=torch.long),
    }


def pack_first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into bins of total ≤ ``capacity`` (first fit, longest first).

    Every length must be ≤ ``capacity``. Within a bin, indices keep their batch order.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return [sorted(b) for b in bins]


def shared_prompt_layout(rows: list[dict[str, Any]], pad_id: int, pack_factor: float = 0.0) -> dict[str, torch.Tensor]:
    """One segment ``prompt + chosen + rejected`` per pair, segments packed into right-padded rows.

    Rows hold at most max(1, ``pack_factor``) times the longest segment's tokens; 0 gives one
    segment per row.

    Returns, for ``n`` rows of ``T`` tokens and ``B`` pairs:

    - ``input_ids``, ``position_ids`` [n, T]: rejected positions restart where the prompt ends, so
      every token has the position it has in its own ``prompt + response`` sequence;
    - ``segment`` [n, T]: the pair a token belongs to (-1 on padding), ``part`` [n, T]: its role
      (``PROMPT``, ``CHOSEN``, ``REJECTED``, ``PAD``); the attention mask is built from these two;
    - ``target_index``, ``target_ids``, ``target_seq`` [N], one entry per scored response token:
      the flat position (into n·T) of the logits that predict it, the token, and the sequence it
      counts for (pair k's chosen response is k, its rejected response B + k, as in the two-sequence
      layout). The first rejected token is predicted from the last prompt token, not from the last
      chosen token that precedes it in the row.
    """
    lengths = [len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    longest = max(lengths)
    bins = pack_first_fit(lengths, max(longest, int(pack_factor * longest))) if pack_factor > 0 else [[k] for k in range(len(rows))]
    width = max(sum(lengths[k] for k in b) for b in bins)
    n_pairs = len(rows)
    ids, pos, seg, part = [], [], [], []
    t_index, t_ids, t_seq = [], [], []
    for row, pairs in enumerate(bins):
        r_ids, r_pos, r_seg, r_part = [], [], [], []
        for k in pairs:
            prompt, chosen, rejected = rows[k]["prompt_ids"], rows[k]["chosen_ids"], rows[k]["rejected_ids"]
            p, c, r = len(prompt), len(chosen), len(rejected)
            start = row * width + len(r_ids)  # flat position of this segment's first token
            r_ids += prompt + chosen + rejected
            r_pos += list(range(p + c)) + list(range(p, p + r))
            r_seg += [k] * (p + c + r)
            r_part += [PROMPT] * p + [CHOSEN] * c + [REJECTED] * r
            # Chosen token j (at p + j) is predicted at p + j - 1; rejected token 0 at p - 1 (the
            # prompt's end), rejected token j > 0 at p + c + j - 1. With an empty prompt the first
            # token of each response has no predictor, as in the two-sequence layout.
            skip = 1 if p == 0 else 0
            t_index += range(start + p - 1 + skip, start + p + c - 1)
            t_ids += chosen[skip:]
            t_seq += [k] * (c - skip)
            if r:
                t_index += ([] if skip else [start + p - 1]) + list(range(start + p + c, start + p + c + r - 1))
                t_ids += rejected[skip:]
                t_seq += [n_pairs + k] * (r - skip)
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        pos.append(r_pos + [0] * pad)
        seg.append(r_seg + [-1] * pad)
        part.append(r_part + [PAD] * pad)
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "position_ids": torch.tensor(pos, dtype=torch.long),
        "segment": torch.tensor(seg, dtype=torch.long),
        "part": torch.tensor(part, dtype=torch.long),
        "target_index": torch.tensor(t_index, dtype=torch.long),
        "target_ids": torch.tensor(t_ids, dtype=torch.long),
        "target_seq": torch.tensor(t_seq, dtype=torch.long),
    }


def pad_left(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    t = max(len(s) for s in seqs)
    return {
        "prompt_input_ids": torch.tensor([[pad_id] * (t - len(s)) + s for s in seqs], dtype=torch.long),
        "prompt_attention_mask": torch.tensor([[0] * (t - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long),
    }


def row_tokens(ds: datasets.Dataset, data_format: str) -> list[int]:
    """Tokens of each tokenized row: prompt + completion (sft, unpaired) or prompt + chosen + rejected."""
    columns = ["prompt_ids", "completion_ids"] if single_response(data_format) else ["prompt_ids", "chosen_ids", "rejected_ids"]
    values = ds.select_columns(columns)
    return [sum(len(r[c]) for c in columns) for r in values]
