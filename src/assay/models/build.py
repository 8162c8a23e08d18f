"""Building a model: the base class of the ``model`` options (``init_from``, LoRA adapters, dtype and
compute settings apply to every option), loading a saved model or Hub id with one clear error line
for files transformers cannot read, and saving a run's final weights. The options themselves (a
Llama built from a config, any Hub id or local path, SmolLM2 from GGUF) are in
:mod:`assay.models.presets`; every option's ``build`` returns ``(policy, tokenizer)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import II, MISSING, OmegaConf

from assay.errors import UserError, check
from assay.lazy import torch, transformers

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DTYPES = ("float32", "bfloat16", "float16")
"""Names of torch dtypes (``torch.<name>``) a model may load in."""
ATTENTION = ("sdpa", "eager", "flash_attention_2")


@dataclass
class LoraConfig:
    """LoRA adapters via ``peft`` (Hu et al. 2021, arXiv 2106.09685); ``r=0`` trains all weights."""

    r: int = 0
    """Adapter rank; 0 disables LoRA."""
    alpha: int = 16
    """Scaling numerator: the update is (alpha / r) * B A."""
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        check(self.r >= 0, "model.lora.r", self.r, "must be >= 0 (0 disables LoRA)")
        check(self.r == 0 or self.alpha > 0, "model.lora.alpha", self.alpha, "must be > 0 (the update is alpha / r times B A: 0 trains nothing)")
        check(0.0 <= self.dropout < 1.0, "model.lora.dropout", self.dropout, "must be in [0, 1)")


def lora_or_full(rank: Any, with_lora: Any, without: Any) -> Any:
    """``${assay.lora_or_full:${model.lora.r},a,b}``: ``a`` for LoRA runs (rank > 0), else ``b`` (a model
    preset's training defaults: adapters take a larger learning rate than all weights)."""
    return with_lora if int(rank) > 0 else without


if not OmegaConf.has_resolver("assay.lora_or_full"):
    OmegaConf.register_new_resolver("assay.lora_or_full", lora_or_full)


@dataclass
class ModelConfig:
    name: str = MISSING
    init_from: Optional[str] = None
    """An earlier run's directory: start from its final weights and tokenizer (e.g. SFT -> DPO)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    dtype: str = "float32"
    seed: int = II("seed")
    """Seed of random initialisation (and of LoRA adapter init)."""
    save_merged: bool = False
    """LoRA runs: also write the adapters merged into the base weights to ``model/`` (a plain
    transformers directory for tools that take no adapter: vLLM, lm-eval-harness ``--model hf``).
    The adapter is always saved to ``adapter/``, and ``init_from``, later stages and the methods that
    read an earlier run (references, ``dynamics_from``) merge it into its base when ``model/`` is not
    there: a LoRA run writes a full copy of the weights only when asked."""
    attn_implementation: Optional[str] = None
    """transformers' attention kernel: ``sdpa`` (PyTorch's fused scaled-dot-product attention),
    ``eager`` (the reference matmul-softmax-matmul), ``flash_attention_2`` (needs the flash-attn
    package and a CUDA GPU; takes no custom mask, so preference objectives need
    ``objective.share_prompt=false``); null = the model's default (sdpa where supported)."""
    gradient_checkpointing: bool = False
    """Keep only each decoder layer's input in the forward pass and recompute the layer in the
    backward pass (Chen et al. 2016, arXiv 1604.06174): activation memory falls from one set per
    layer to about one layer's, for roughly one extra forward pass of compute. Evaluation, scoring
    and per-sample gradient features run in eval mode and do not recompute."""

    def __post_init__(self) -> None:
        check(self.dtype in DTYPES, "model.dtype", self.dtype, f"must be one of {sorted(DTYPES)}")
        if self.attn_implementation is not None:
            check(self.attn_implementation in ATTENTION, "model.attn_implementation", self.attn_implementation, f"must be one of {list(ATTENTION)} (or null for the model's default)")
        if self.init_from is not None:
            check_run_dir(self.init_from)

    @property
    def trains_tokenizer(self) -> bool:
        """True when the model has no vocabulary of its own and the run trains one on its corpus."""
        return False

    @property
    def randomly_initialised(self) -> bool:
        """True when the run starts from random weights: built from a config, not loaded from a
        checkpoint, the Hub, a GGUF file or an earlier run (``init_from``)."""
        return False

    def build(self, corpus: Optional[datasets.DatasetDict]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        torch.manual_seed(self.seed)
        if self.init_from is not None:
            model, tokenizer = load_run_model("model.init_from", self.init_from, Path(self.init_from), getattr(torch, self.dtype),
                                              again="start from another run directory, or run again the one that wrote it")
        else:
            model, tokenizer = self.load(corpus)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.apply_compute_settings(model)
        if self.lora.r > 0:
            model = self._wrap_lora(model)
        return model.train(), tokenizer  # from_pretrained returns eval mode

    def apply_compute_settings(self, model: PreTrainedModel) -> None:
        """Attention kernel and gradient checkpointing: how the model computes, not what."""
        if self.attn_implementation is not None:
            try:
                model.set_attn_implementation(self.attn_implementation)
            except (ImportError, ValueError) as e:
                raise UserError("model.attn_implementation", self.attn_implementation, f"not available for this model here ({str(e).strip().splitlines()[0]})") from None
        if self.gradient_checkpointing:
            if not model.supports_gradient_checkpointing:
                raise UserError("model.gradient_checkpointing", True, f"{type(model).__name__} does not support gradient checkpointing")
            # Non-reentrant checkpointing: correct with frozen inputs (LoRA) and with FSDP units.
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False

    def load(self, corpus: Optional[datasets.DatasetDict]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:  # pragma: no cover
        raise TypeError(f"{type(self).__name__} does not implement load()")

    def base_model_path(self) -> Optional[str]:
        """Where the weights LoRA adapts can be loaded from (an adapter's ``base_model_name_or_path``),
        or None when they exist only in this run (random init, de-quantised GGUF)."""
        if self.init_from is not None:
            model_dir = Path(self.init_from).expanduser().resolve() / "model"
            # an adapter-only run: the merged weights it starts from exist only in this run
            return str(model_dir) if (model_dir / "config.json").is_file() else None
        return None

    def _wrap_lora(self, model: PreTrainedModel):
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        present = {n.split(".")[-1] for n, _ in model.named_modules()}
        missing = [m for m in self.lora.target_modules if m not in present]
        if missing:
            raise UserError("model.lora.target_modules", missing, f"not found in the model; module names include {sorted(present)[:20]}")
        cfg = PeftLoraConfig(
            r=self.lora.r,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            target_modules=list(self.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, cfg)


def load_pretrained(field: str, value: Any, model_path: Any, tokenizer_path: Any, dtype: Any, again: str, **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Tokenizer and causal LM as ``from_pretrained`` reads them (a saved model's directory or a Hub
    id); files transformers cannot read are one :class:`UserError` on ``field``: missing files,
    damaged or truncated weights, a ``model_type`` this transformers does not know. ``again`` says
    how to get good files (where they came from)."""
    from safetensors import SafetensorError

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_path, **kwargs)
    except OSError as e:
        raise UserError(field, value, f"could not be loaded ({_reason(e)})") from None
    except ValueError as e:  # no tokenizer files, or ones transformers cannot build a tokenizer from
        raise UserError(field, value, f"its tokenizer could not be loaded from {tokenizer_path} ({_reason(e)}); "
                        "a model directory holds its tokenizer files (tokenizer.json, tokenizer_config.json)") from None
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **kwargs)
    except OSError as e:
        raise UserError(field, value, f"could not be loaded ({_reason(e)})") from None
    except SafetensorError as e:
        raise UserError(field, value, f"{_weights_name(model_path)} is not a readable safetensors file ({_reason(e)}): "
                        f"it is damaged or was cut short (a full disk, an interrupted copy); {again}") from None
    except ValueError as e:  # config.json names an architecture transformers cannot build
        unknown = _unknown_model_type(model_path)
        if unknown is None:
            raise UserError(field, value, f"could not be loaded as a causal language model ({_reason(e)})") from None
        raise UserError(field, value, f"its config.json has model_type {unknown!r}, which transformers {transformers.__version__} does not know; "
                        "correct model_type (e.g. 'llama'), or upgrade transformers for a newer architecture") from None
    return model, tokenizer


def _reason(e: BaseException) -> str:
    """The first line of a library's message, short enough for the one error line."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _weights_name(model_path: Any) -> str:
    """The safetensors file(s) of a local model directory, for the error line ("its weights" for a Hub id)."""
    local = Path(str(model_path)).expanduser()
    files = sorted(local.glob("*.safetensors")) if local.is_dir() else []
    if len(files) == 1:
        return str(files[0])
    return f"one of the {len(files)} .safetensors files in {local}" if files else "its weights"


def _unknown_model_type(model_path: Any) -> Optional[str]:
    """The ``model_type`` a local config.json names when transformers has no such architecture, else None."""
    import json

    try:
        model_type = json.loads((Path(str(model_path)).expanduser() / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    from transformers import CONFIG_MAPPING

    return str(model_type) if model_type is not None and model_type not in CONFIG_MAPPING else None


def has_final_model(run: Path) -> bool:
    """A finished run's final weights are there: ``model/``, or a LoRA run's ``adapter/`` (and ``tokenizer/``)."""
    run = Path(run)
    return ((run / "model" / "config.json").is_file() or (run / "adapter" / "adapter_config.json").is_file()) and (run / "tokenizer").is_dir()


def check_run_dir(path: str, field_name: str = "model.init_from") -> Path:
    run = Path(path).expanduser()
    check(has_final_model(run), field_name, path, "must be an assay run directory (with model/ or a LoRA run's adapter/, and tokenizer/, from a finished run)")
    return run


def load_run_model(field: str, value: Any, run: Path, dtype: Any = None, again: str = "point it at another run directory, or run again the one that wrote it",
                   ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A finished run's final model and tokenizer: ``model/`` where the run wrote it, else (a LoRA run
    that saved its adapter only, the default) the adapter merged into its base."""
    run = Path(run).expanduser()
    dtype = dtype if dtype is not None else "auto"  # as saved, from_pretrained's own default
    if (run / "model" / "config.json").is_file() or not (run / "adapter" / "adapter_config.json").is_file():
        return load_pretrained(field, value, run / "model", run / "tokenizer", dtype, again)
    from peft import PeftModel

    from assay.models.adapters import base_of

    base, tokenizer = load_pretrained(field, value, base_of(run / "adapter"), run / "tokenizer", dtype, again)
    return PeftModel.from_pretrained(base, str(run / "adapter")).merge_and_unload(), tokenizer


def save_model(
    model: Any, tokenizer: PreTrainedTokenizerBase, run_dir: Path, config: Optional[ModelConfig] = None, state_dict: Optional[dict] = None
) -> None:
    """The run's final weights, each directory complete with its tokenizer files, so the tools that
    come next load them as they are (``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``,
    ``pipeline``, lm-eval-harness ``--model hf``, vLLM, the Hub):

    - ``model/``: full weights (safetensors), config, generation config and tokenizer; LoRA adapters
      merged in when ``model.save_merged=true``. Later stages ``init_from`` this (or the adapter).
    - ``adapter/`` (LoRA runs): ``adapter_model.safetensors`` + ``adapter_config.json`` as peft saves
      them, pointing at the base weights: the Hub id, or a path (relative to the adapter when the
      base lies in or beside the run: ``assay.models.adapters``), with ``base_model/`` written here
      when the base exists only in this run; a ``README.md`` says how to load it.
    - ``tokenizer/``: the tokenizer alone (as earlier runs wrote it).

    ``state_dict``: the weights gathered from a strategy that shards them (``trainers.gathered_weights``);
    the model's own parameters are then only this rank's shards. LoRA adapters are saved from it,
    the merged model is not (merging needs the whole base on one rank).
    """
    tokenizer.save_pretrained(run_dir / "tokenizer")
    save_merged = config.save_merged if config is not None else True
    if state_dict is not None:
        if hasattr(model, "peft_config"):
            model.save_pretrained(run_dir / "adapter", state_dict=state_dict)
            tokenizer.save_pretrained(run_dir / "adapter")
            print("[assay] parameters were sharded: saved the LoRA adapter only (merge it with peft's merge_and_unload on one device)", flush=True)
            return
        model.save_pretrained(run_dir / "model", state_dict=state_dict)
        tokenizer.save_pretrained(run_dir / "model")
        return
    if hasattr(model, "peft_config"):  # a peft model: LoRA adapters on a frozen base
        base = config.base_model_path() if config is not None else None
        if base is None:
            import copy

            base_dir = run_dir / "base_model"
            copy.deepcopy(model).unload().save_pretrained(base_dir)
            tokenizer.save_pretrained(base_dir)
            base = str(base_dir.resolve())
        from assay.models.adapters import portable_base, write_adapter_card

        named = portable_base(base, run_dir / "adapter")
        for adapter in model.peft_config.values():
            adapter.base_model_name_or_path = named
        model.save_pretrained(run_dir / "adapter")
        tokenizer.save_pretrained(run_dir / "adapter")
        write_adapter_card(run_dir / "adapter", named)
        if not save_merged:
            return
        model = model.merge_and_unload()
    model.save_pretrained(run_dir / "model")
    tokenizer.save_pretrained(run_dir / "model")


def model_cache_dir() -> Path:
    """Where fetched weights live: ``$ASSAY_CACHE/models`` (default ``~/.cache/assay/models``)."""
    root = Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay")).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError("ASSAY_CACHE", str(root), "is a file, not a directory: point it at a directory (fetched models go to <it>/models)")
    return root / "models"
