"""Communication per round and client memory: FedBiOT vs FedAvg of LoRA adapters on the full model.

    .venv/bin/python benchmarks/fedbiot/run.py [--rounds 10 --lora-r 8 --drop-ratio 0.2 0.5 --adapter-layers 2]

Both are counted, not timed: every number is a deterministic function of the model's shapes, computed
with the code the collaborative runs use (``assay.collab.fedbiot``: ``restrict_to_adapter``,
``build_emulator``, ``Emulator.layer_names``; ``assay.collab.local.client_memory_bytes``), on models
built on PyTorch's ``meta`` device (shapes, no storage), so a 7B model costs nothing:

- ``tiny``: the ``tiny_llama`` defaults (hidden 128, 4 layers, 4 heads, vocabulary 512);
- ``smollm2_135m``: SmolLM2-135M's architecture (hidden 576, 30 layers, 9 / 3 heads, vocabulary 49,152);
- ``llama2_7b``: LLaMA-2-7B's (hidden 4096, 32 layers, 32 heads, vocabulary 32,000), the paper's model.

LoRA rank ``--lora-r`` (alpha 2r) on ``q_proj`` / ``v_proj`` (``model.lora``'s default targets), float32.

Per client and round, bytes are those of the arrays Flower serializes (numpy's .npy: data plus a
header; the script checks its count against ``flwr.app.Array`` on real arrays of the tiny model):

- ``fedavg``: down and up, the LoRA factors of every layer;
- ``fedbiot``: down, the LoRA factors of the last ``adapter_layers`` layers plus the emulator's
  compressed layers (re-aligned every round, so sent every round); up, the adapter.

``once`` is what a client needs before its first round besides that: the frozen base (FedAvg: every
frozen weight of the full model; FedBiOT: the emulator's frozen weights that are not re-sent each
round, i.e. embeddings, final norm, head and the adapter layers' base weights; a client reads them
from the run's base model). ``client memory`` is ``client_memory_bytes``: parameters of the model a client trains plus a
gradient and two AdamW moments per trainable parameter (activations excluded). Rows go to
``benchmarks/fedbiot/results.jsonl``, a table to stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

MODELS = {
    "tiny": dict(vocab_size=512, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True),
    "smollm2_135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "llama2_7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}


def npy_bytes(shape, dtype) -> int:
    """Bytes of ``np.save`` of an array (what ``flwr.app.Array`` carries): header + data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)})
    return buf.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize


def record_bytes(params: dict, names) -> int:
    return sum(npy_bytes(tuple(params[n].shape), "float32") for n in names)


def build(arch: dict, r: int, device: str = "meta"):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(max_position_embeddings=256, **arch))
        return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]))


def check_counts_against_flower(r: int) -> None:
    """The .npy count equals Flower's serialization on the real (CPU) tiny model's adapter."""
    from flwr.app import Array

    from assay.collab.local import trainable_state

    state = trainable_state(build(MODELS["tiny"], r, "cpu"))
    assert sum(len(Array(np.ascontiguousarray(v)).data) for v in state.values()) == sum(npy_bytes(v.shape, v.dtype) for v in state.values())


def measure(name: str, arch: dict, r: int, drop: float, adapter_layers: int, rounds: int) -> list[dict]:
    from assay.collab.emulator import build_emulator, restrict_to_adapter
    from assay.collab.local import client_memory_bytes, trainable_names

    full = build(arch, r)
    params = dict(full.named_parameters())
    frozen = sum(p.numel() * 4 for p in {id(p): p for p in full.parameters()}.values() if not p.requires_grad)
    lora = trainable_names(full)
    fedavg = {"rule": "fedavg", "down": record_bytes(params, lora), "up": record_bytes(params, lora), "once": frozen,
              "memory": client_memory_bytes(full), "trainable": sum(params[n].numel() for n in lora)}
    restrict_to_adapter(full, adapter_layers)
    adapter = trainable_names(full)
    emu = build_emulator(full, adapter_layers, drop)
    eparams = dict(emu.model.named_parameters())
    layers = record_bytes(eparams, emu.layer_names())
    # frozen once: every emulator parameter that is neither sent each round (compressed layers) nor trained (tied counted once)
    sent = set(emu.layer_names())
    once = sum(p.numel() * 4 for n, p in {id(p): (n, p) for n, p in emu.model.named_parameters()}.values() if n not in sent and not p.requires_grad)
    fedbiot = {"rule": "fedbiot", "down": record_bytes(params, adapter) + layers, "up": record_bytes(params, adapter), "once": once,
               "memory": client_memory_bytes(emu.model), "trainable": sum(params[n].numel() for n in adapter),
               "emulator_layers": f"{emu.kept} of {emu.teacher_layers} (+{adapter_layers} adapter)", "drop_ratio": drop}
    rows = []
    for row in (fedavg, fedbiot):
        rows.append({"model": name, "lora_r": r, "adapter_layers": adapter_layers, "rounds": rounds, **row,
                     "down_total": row["down"] * rounds + row["once"], "up_total": row["up"] * rounds})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--drop-ratio", type=float, nargs="+", default=[0.2, 0.5])
    ap.add_argument("--adapter-layers", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.jsonl")))
    args = ap.parse_args()
    check_counts_against_flower(args.lora_r)
    rows = []
    for name in args.models:
        for drop in args.drop_ratio:
            pair = measure(name, MODELS[name], args.lora_r, drop, args.adapter_layers, args.rounds)
            rows += pair if drop == args.drop_ratio[0] else pair[1:]
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    mb = lambda b: f"{b / 2**20:,.2f}"
    print(f"| model | rule | drop | emulator layers | down / round (MiB) | up / round (MiB) | once (MiB) | down, {args.rounds} rounds + once (MiB) | "
          f"client memory (MiB) | memory / fedavg | down / fedavg | up / fedavg |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["rule"] == "fedavg")
        print(f"| {row['model']} | {row['rule']} | {row.get('drop_ratio', '')} | {row.get('emulator_layers', 'all (full model)')} | {mb(row['down'])} | {mb(row['up'])} | "
              f"{mb(row['once'])} | {mb(row['down_total'])} | {mb(row['memory'])} | {row['memory'] / base['memory']:.3f} | {row['down_total'] / base['down_total']:.3f} | "
              f"{row['up'] / base['up']:.3f} |")


if __name__ == "__main__":
    main()
