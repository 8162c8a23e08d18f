"""The machine's peak FLOP/s: what model FLOP utilisation (MFU) divides by.

On a CUDA GPU the peak is the datasheet's dense bf16 tensor-core rate (:data:`GPU_PEAKS`), the
number every MFU in the literature is quoted against (PaLM, Chowdhery et al. 2022, arXiv 2204.02311,
appendix B). Where the card is not in the table, a bf16 matmul is measured on it instead.

On the CPU no datasheet says what torch reaches: the peak is *measured*, a dense float32 matmul of
``size`` x ``size`` at the thread count the run uses (``torch.get_num_threads()``), best of a few
repeats, and cached per machine under ``<cache dir>/peak_flops.json``, keyed by the CPU model, the
thread count, the torch version and the matrix size. A later run on the same machine and threads
reads the cache (a measurement takes about a quarter of a second). The best of the repeats is taken because
other work on the machine only ever slows a matmul down; a measurement made on a loaded machine is
still too low, so MFU then reads too high: delete the cache file (or give the peak,
``trainer.peak_flops``) after measuring on a busy machine.

Each peak belongs to one number format: a GPU run in float32 (``trainer.precision=32-true``) is
measured against the card's bf16 peak, as published MFUs are, so it reads low; a CPU run in bf16 on a
CPU with bf16 matrix units is measured against the float32 peak and can read high.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Optional

CACHE_FILE = "peak_flops.json"
CPU_SIZE = 1024
"""2·1024³ ≈ 2.1 GFLOP a matmul: about 25 ms on one core of a current x86 CPU, so best-of-5 plus a
warm-up costs a quarter of a second per machine and thread count (every run with a fresh cache pays
it). Measured on this project's 2-core machine at one thread: 1024 gave 98 GFLOP/s, 2048 88 GFLOP/s
(1.5 s), 512 89 GFLOP/s: the larger product is no closer to the peak, only slower."""
GPU_SIZE = 8192
REPEATS = 5

# Dense (no 2:4 sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's datasheets:
# H100 SXM 989.4 T, H100 PCIe 756 T, H100 NVL 835 T (H100 datasheet, 2023); H200 SXM 989 T, H200 NVL
# 835 T (H200 datasheet, 2024); A100 (SXM and PCIe) 312 T (A100 datasheet, 2021); L40S 362 T (L40S
# datasheet); L4 121 T (L4 datasheet: 242 T "with sparsity"); A10 125 T (A10 datasheet: 250 T with
# sparsity); GeForce RTX 4090 165.2 T (Ada Lovelace architecture whitepaper, BF16 with FP32 accumulate).
# Matched in order against torch.cuda.get_device_name(): the more specific names first ("A100" before
# "A10", "L40S" before "L4", "H100 PCIe" before "H100").
GPU_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989.4e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165.2e12),
)


def datasheet_peak(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU by its name (``torch.cuda.get_device_name()``), None if not in the table."""
    name = device_name.upper()
    for pattern, flops in GPU_PEAKS:
        if pattern.upper() in name:
            return flops
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``; ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def default_cache_dir() -> Path:
    """``$ASSAY_CACHE`` (default ``~/.cache/assay``), as ``paths.cache_dir`` resolves it."""
    return Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay")).expanduser()


def matmul_flops(size: int, device: Any = "cpu", dtype: Any = None, repeats: int = REPEATS) -> float:
    """FLOP/s of the best of ``repeats`` products of two ``size`` x ``size`` matrices (2·size³
    FLOPs each: a multiply and an add per term), after one untimed warm-up product."""
    import torch

    dtype = dtype or torch.float32
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    cuda = torch.device(device).type == "cuda"
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            if cuda:
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            if i:  # the first product warms caches, threads and kernels up
                best = min(best, elapsed)
    return 2.0 * size**3 / best


def cpu_key(threads: int, size: int) -> str:
    import torch

    return f"{cpu_model()} | {threads} threads | torch {torch.__version__} | float32 {size}x{size}"


def peak_flops(device: Any = "cpu", cache_dir: Optional[Path] = None, size: Optional[int] = None, repeats: int = REPEATS,
               threads: Optional[int] = None) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for ``device``: a CUDA GPU's datasheet bf16 peak, else a
    measured matmul; on the CPU the float32 matmul peak at ``threads`` (default: torch's current
    count), measured once per machine and read from the cache after."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        flops = datasheet_peak(name)
        if flops is not None:
            return flops, f"datasheet bf16 dense peak of {name}"
        size = size or GPU_SIZE
        return matmul_flops(size, device, torch.bfloat16, repeats), f"measured bf16 {size}x{size} matmul on {name} (not in the datasheet table)"
    if device.type != "cpu":
        size = size or CPU_SIZE
        return matmul_flops(size, device, torch.float32, repeats), f"measured float32 {size}x{size} matmul on {device.type}"
    size = size or CPU_SIZE
    wanted = threads or torch.get_num_threads()
    key = cpu_key(wanted, size)
    path = Path(cache_dir or default_cache_dir()) / CACHE_FILE
    cached = read_cache(path)
    if key in cached:
        return float(cached[key]["flops"]), f"measured {key} (cached {cached[key]['measured']})"
    before = torch.get_num_threads()
    torch.set_num_threads(wanted)
    try:
        flops = matmul_flops(size, "cpu", torch.float32, repeats)
    finally:
        torch.set_num_threads(before)
    write_cache(path, key, {"flops": flops, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "repeats": repeats,
                            "load1": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None})
    return flops, f"measured {key}"


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one entry; written to a temporary file and renamed, so a reader never sees half a file.
    An unwritable cache only costs the next run a measurement."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**read_cache(path), key: entry}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass
