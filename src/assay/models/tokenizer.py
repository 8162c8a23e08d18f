"""A tokenizer trained on the run's own corpus (for models built from a config, with no vocabulary)."""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>"]
SPACE = "▁"  # U+2581, SentencePiece's visible space: whitespace survives as part of the next token

# After spaces become SPACE: each digit on its own (with the space before it, if any), every other
# run of non-space characters as one word (with its space), other whitespace (newlines, tabs) alone.
PIECES = Regex(rf"{SPACE}?[0-9]|{SPACE}?[^{SPACE}0-9\s]+|[{SPACE}\s]")


def train_corpus_tokenizer(texts: Iterable[str], vocab_size: int, alphabet: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-pair encoding within words, digits split individually, decoding back to the exact text.

    Splitting digits keeps arithmetic symbol-per-token (as in LLaMA's tokenizer); merges never cross
    a word boundary, so the space-separated symbols of the skills corpus are one token each
    (``▁k``, ``▁7``). Spaces are kept as the marker that starts the next token (SentencePiece's
    Metaspace), so decoding restores them exactly: ``74`` decodes as ``74`` and ``7 4`` as ``7 4``,
    which exact match on a user's multi-digit and multi-word answers depends on. ``alphabet`` adds
    characters that occur only in held-out text, so evaluation never meets ``<unk>``.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=False),
            pre_tokenizers.Split(PIECES, behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="never", split=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=sorted(set(alphabet) | {SPACE}),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", clean_up_tokenization_spaces=False
    )
