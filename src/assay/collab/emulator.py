"""FedBiOT's emulator (Wu et al., KDD 2024, arXiv 2406.17706; :mod:`assay.collab.fedbiot`): the decoder
layers below the adapter compressed by uniform layer dropping (the authors' ``model_drop_layer``), the
names that map its layers onto the full model's, and its alignment to the full model by distillation
on public data (the normalised L2 gap of the layers it replaces, plus a token-averaged KL)."""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from assay.collab.rules import FIELD
from assay.errors import UserError, check

LAYER = re.compile(r"\.layers\.(\d+)\.")


# --------------------------------------------------------------------------------------------------
# The split: adapter = the last layers, emulator = the layers below, uniformly dropped


def emulator_size(teacher_layers: int, drop_ratio: float) -> int:
    """How many of the ``teacher_layers`` the emulator keeps: round(n (1 - drop_ratio)), at least one
    (the authors' ``model_drop_layer``; Python's round, as theirs)."""
    return max(1, round(teacher_layers * (1.0 - drop_ratio)))


def emulator_layer_indices(teacher_layers: int, keep: int) -> list[int]:
    """Which teacher layers the emulator keeps: int(i (n - 1) / (K - 1)) for i < K, so the first and the
    last are always kept (``model_drop_layer`` in the authors' offsite_tuning/utils.py; K = 1 keeps
    the first, where theirs divides by zero)."""
    check(1 <= keep <= teacher_layers, f"{FIELD}.drop_ratio", keep,
          f"an emulator of {keep} layers cannot stand for the {teacher_layers} layers below the adapter: it keeps between 1 and {teacher_layers}")
    if keep == 1:
        return [0]
    stride = (teacher_layers - 1) / (keep - 1)
    return [int(i * stride) for i in range(keep)]


def decoder_layers(model):
    """The ``ModuleList`` of a causal LM's decoder layers (``model.model.layers``, under PEFT too)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise UserError("collab/aggregation", "fedbiot", f"splits a decoder's layers (model.model.layers), and {type(base).__name__} has none")
    return layers


def layer_of(name: str) -> Optional[int]:
    m = LAYER.search(name)
    return int(m.group(1)) if m else None


def rename_layers(state: dict[str, np.ndarray], mapping: dict[int, int]) -> dict[str, np.ndarray]:
    """The same parameters under other layer numbers (``.layers.<i>.`` -> ``.layers.<mapping[i]>.``)."""
    return {LAYER.sub(f".layers.{mapping[layer_of(k)]}.", k, count=1) if layer_of(k) is not None else k: v for k, v in state.items()}


@dataclass
class Emulator:
    """The emulator model (embeddings, the kept teacher layers, then the adapter layers, norm, head)
    and which full-model layer each of its layers stands for."""

    model: Any
    source: list[int]
    """Emulator layer j holds (a compressed stand-in for) full-model layer source[j]."""
    teacher_layers: int
    """Layers below the adapter in the full model (the part the emulator compresses)."""

    @property
    def kept(self) -> int:
        """How many compressed (teacher) layers the emulator has: its adapter starts there."""
        return sum(1 for src in self.source if src < self.teacher_layers)

    def to_emulator(self) -> dict[int, int]:
        """Full-model adapter layer -> emulator layer."""
        return {src: j for j, src in enumerate(self.source) if src >= self.teacher_layers}

    def to_full(self) -> dict[int, int]:
        return {j: src for j, src in enumerate(self.source) if src >= self.teacher_layers}

    def layer_names(self) -> list[str]:
        """The weights of the emulator's compressed layers: what the server re-aligns and sends each
        round (LoRA factors below the adapter are left out: they never train, and B = 0 there)."""
        return [n for n, _ in self.model.named_parameters() if (i := layer_of(n)) is not None and i < self.kept and "lora_" not in n]

    def layer_state(self) -> dict[str, np.ndarray]:
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().cpu().numpy().copy() for n in self.layer_names()}

    def load_layers(self, state: dict[str, np.ndarray]) -> None:
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(torch.as_tensor(np.asarray(v), dtype=params[n].dtype))

    def load_adapter(self, adapter: dict[str, np.ndarray]) -> None:
        """Install the global adapter (full-model names) on the emulator's top layers; an adapter that
        does not fit (another layer, another shape, a missing part) is one line."""
        import torch

        mapping = self.to_emulator()
        wrong = sorted({layer_of(k) for k in adapter if layer_of(k) not in mapping}, key=str)
        check(not wrong, f"{FIELD}.adapter_layers", len(mapping),
              f"the adapter sent to the client does not fit the emulator: it has layers {wrong}, the emulator's adapter is layers {sorted(mapping)} of the full model")
        local = rename_layers(adapter, mapping)
        params = dict(self.model.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad}
        for n, v in local.items():
            check(n in params and tuple(params[n].shape) == tuple(np.shape(v)), f"{FIELD}.adapter_layers", len(mapping),
                  f"the adapter sent to the client does not fit the emulator: {n} {list(np.shape(v))} vs {list(params[n].shape) if n in params else 'absent'}")
        missing = sorted(trainable - set(local))
        check(not missing, f"{FIELD}.adapter_layers", len(mapping), f"the adapter sent to the client does not fit the emulator: it lacks {len(missing)} of its trainable parameters (e.g. {missing[:1]})")
        with torch.no_grad():
            for n, v in local.items():
                params[n].copy_(torch.as_tensor(np.asarray(v), dtype=params[n].dtype))

    def adapter_state(self) -> dict[str, np.ndarray]:
        """The trained adapter under the full model's names: what plugs back into the full model."""
        from assay.collab.local import trainable_state

        return rename_layers(trainable_state(self.model), self.to_full())


def check_split(num_layers: int, adapter_layers: int) -> None:
    check(adapter_layers < num_layers, f"{FIELD}.adapter_layers", adapter_layers,
          f"the model has {num_layers} decoder layers: the adapter takes the last adapter_layers and leaves at least one below it for the emulator")


def restrict_to_adapter(model, adapter_layers: int) -> None:
    """Only the adapter trains (and travels): its LoRA factors under LoRA, else its whole layers."""
    layers = decoder_layers(model)
    check_split(len(layers), adapter_layers)
    first = len(layers) - adapter_layers
    lora = any("lora_" in n for n, _ in model.named_parameters())
    for n, p in model.named_parameters():
        i = layer_of(n)
        p.requires_grad_(i is not None and i >= first and ("lora_" in n or not lora))


def build_emulator(model, adapter_layers: int, drop_ratio: float) -> Emulator:
    """A copy of ``model`` whose decoder keeps the selected teacher layers and the adapter layers
    (renumbered 0..K+a-1; attention layer indices and the config follow)."""
    import torch

    layers = decoder_layers(model)
    check_split(len(layers), adapter_layers)
    n = len(layers) - adapter_layers
    source = emulator_layer_indices(n, emulator_size(n, drop_ratio)) + list(range(n, len(layers)))
    emu = copy.deepcopy(model)
    kept = torch.nn.ModuleList([decoder_layers(emu)[i] for i in source])
    base = emu.get_base_model() if hasattr(emu, "get_base_model") else emu
    base.model.layers = kept
    for j, layer in enumerate(kept):
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = j
    base.config.num_hidden_layers = len(kept)
    if getattr(base.config, "layer_types", None) is not None:
        base.config.layer_types = [base.config.layer_types[i] for i in source]
    return Emulator(emu, source, n)


# --------------------------------------------------------------------------------------------------
# The server's alignment: distillation of the full model into the emulator


def gap_l2(teacher, student):
    """mean((h_T - h_E)^2) / mean(h_T^2): the authors' ``l2_norm`` (offsite-tuning's), over every position."""
    std = teacher.pow(2).mean().sqrt()
    return (teacher - student).div(std).pow(2).mean()


def gap_kl(teacher_logits, student_logits):
    """KL(softmax(teacher) || softmax(student)) summed over the vocabulary and the positions, divided by
    batch x length (the authors' ``get_kd_kl_divergence``: ``KLDivLoss(reduction='sum') / numel``)."""
    import torch.nn.functional as F

    numel = teacher_logits.shape[0] * teacher_logits.shape[1]
    return F.kl_div(F.log_softmax(student_logits.float(), dim=-1), F.softmax(teacher_logits.float(), dim=-1), reduction="sum") / numel


def distill_loss(full, emulator: Emulator, input_ids, attention_mask, kd_weight: float):
    """gap_L2 + kd_weight x gap_KL on one batch. The teacher is the full model with the current
    adapter (no gradient); gap_L2 compares the output of the last teacher layer below the adapter
    with the output of the emulator's last compressed layer (both from the same embeddings); gap_KL
    the two models' next-token distributions (full + adapter vs emulator + adapter)."""
    import torch

    with torch.no_grad():
        t = full(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    s = emulator.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    loss = gap_l2(t.hidden_states[emulator.teacher_layers].float(), s.hidden_states[emulator.kept].float())
    if kd_weight:
        loss = loss + kd_weight * gap_kl(t.logits, s.logits)
    return loss


def public_batches(srv, seed: int):
    """Endless shuffled batches of the public val split (inputs only)."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from assay.data.collate import Collator
    from assay.data.datamodule import Rows

    d = srv.spec.data
    loader = DataLoader(Rows(srv.public["val"]), batch_size=d.batch_size, sampler=RandomSampler(range(len(srv.public["val"])), generator=torch.Generator().manual_seed(seed)),
                        collate_fn=Collator(srv.tokenizer.pad_token_id, d.format, with_generation=False))
    return itertools.chain.from_iterable(itertools.repeat(loader))


def align(full, emulator: Emulator, batches, steps: int, lr: float, kd_weight: float) -> float:
    """``steps`` SGD steps on the emulator's compressed layers (every weight of them; the adapter and
    the full model stay fixed). Returns the mean distillation loss (NaN for 0 steps)."""
    import torch

    named = dict(emulator.model.named_parameters())
    params = [named[n] for n in emulator.layer_names()]
    saved = {id(p): p.requires_grad for p in emulator.model.parameters()}
    for p in emulator.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=lr)
    full.eval()
    emulator.model.train()
    losses = []
    for _ in range(steps):
        batch = next(batches)
        loss = distill_loss(full, emulator, batch["input_ids"], batch["attention_mask"], kd_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for p in emulator.model.parameters():
        p.requires_grad_(saved[id(p)])
    full.train()
    return float(np.mean(losses)) if losses else float("nan")
