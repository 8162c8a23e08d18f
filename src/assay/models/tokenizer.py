"""A tokenizer trained on the run's own corpus (for models built from a config, with no vocabulary)."""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>"]


def train_corpus_tokenizer(texts: Iterable[str], vocab_size: int, alphabet: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-pair encoding over whitespace-separated words, digits split individually.

    Splitting digits keeps arithmetic symbol-per-token (as in LLaMA's tokenizer); merges never
    cross whitespace, so the symbols of the skills corpus are one token each. ``alphabet`` adds
    characters that occur only in held-out text, so evaluation never meets ``<unk>``.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=True)]
    )
    # No decoder: decoding joins tokens with single spaces, which restores the corpus's symbol spacing.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=sorted(set(alphabet)),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>", clean_up_tokenization_spaces=False
    )
