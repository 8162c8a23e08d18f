"""Dr. DPO with ``objective.aggregator.scope=global`` on two ranks (gloo, CPU) equals Dr. DPO on the concatenated batch.

L = -β'·log mean_i exp(-ℓ_i/β') is not a mean of per-rank terms, so its expectation over the
global batch needs every rank's losses (Wu et al., ICLR 2025, arXiv 2407.07880; the reference code
aggregates per device). Each rank here computes per-pair DPO losses of a shared parameter on its
own slice of the batch (uneven slices, some pairs masked out as β-DPO's filter would), takes the
global-scope loss and its gradient, and averages the gradient over ranks as DDP does.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from assay.objectives.aggregators import DrDPO, dr_dpo_loss
import pytest

BETA_PRIME = 0.5
WORLD = 2
SIZES = (5, 3)  # uneven per-rank batches: the gather pads and trims


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features x [N, 4] (the margin is h_i = w·x_i), kept mask [N], initial w [4]."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sum(SIZES), 4, generator=g) * 3
    kept = torch.ones(sum(SIZES))
    kept[1] = kept[6] = 0.0
    return x, kept, torch.randn(4, generator=g)


def per_pair_loss(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(0.1 * (x @ w))  # DPO's ℓ_i = -log σ(β h_i), β = 0.1


def single_process(scope: str = "global") -> dict:
    x, kept, w0 = batch()
    w = w0.clone().requires_grad_(True)
    value, weights = DrDPO(beta_prime=BETA_PRIME, scope=scope).reduce(per_pair_loss(w, x), kept)
    value.backward()
    return {"value": value.detach(), "weights": weights.detach(), "grad": w.grad}


def worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        x, kept, w0 = batch()
        start = sum(SIZES[:rank])
        mine = slice(start, start + SIZES[rank])
        result = {}
        for scope in ("global", "local"):
            w = w0.clone().requires_grad_(True)
            value, weights = DrDPO(beta_prime=BETA_PRIME, scope=scope).reduce(per_pair_loss(w, x[mine]), kept[mine])
            value.backward()
            grad = w.grad.clone()
            dist.all_reduce(grad)
            grad /= WORLD  # DDP averages gradients over ranks
            result[scope] = {"value": value.detach(), "weights": weights.detach(), "grad": grad}
        torch.save(result, f"{out_dir}/rank{rank}.pt")
        # Both ranks must be done with gloo before either tears it down: a rank that destroys the
        # group while its peer still has a pending send aborts the peer's gloo thread (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(out_dir: str, timeout_s: float = 180.0) -> list[dict]:
    ctx = mp.start_processes(worker, args=(free_port(), out_dir), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError("the two gloo ranks did not finish")
    return [torch.load(f"{out_dir}/rank{r}.pt") for r in range(WORLD)]


@pytest.mark.cli
def test_global_scope_on_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    ranks = run_two_ranks(str(tmp_path))
    whole = single_process()
    x, kept, w0 = batch()
    # the single-process reference is the plain formula on the kept pairs of the whole batch
    direct, _ = dr_dpo_loss(per_pair_loss(w0, x)[kept > 0], BETA_PRIME)
    assert torch.allclose(whole["value"], direct, atol=1e-6)

    weights = torch.cat([r["global"]["weights"] for r in ranks])
    assert torch.allclose(weights, whole["weights"], atol=1e-6)  # each rank returns its slice of the global weights
    for r in ranks:
        assert torch.allclose(r["global"]["value"], whole["value"], atol=1e-6)  # every rank sees the global loss
        assert torch.allclose(r["global"]["grad"], whole["grad"], atol=1e-6)  # DDP's average is the global gradient

    # local scope: each rank's soft-min over its own pairs only, which is another loss and gradient
    local_values = [float(r["local"]["value"]) for r in ranks]
    assert all(abs(v - float(whole["value"])) > 1e-3 for v in local_values)
    assert not torch.allclose(ranks[0]["local"]["grad"], whole["grad"], atol=1e-4)
    for rank, r in enumerate(ranks):
        start = sum(SIZES[:rank])
        mine = slice(start, start + SIZES[rank])
        own, _ = dr_dpo_loss(per_pair_loss(w0, x[mine])[kept[mine] > 0], BETA_PRIME)
        assert torch.allclose(r["local"]["value"], own, atol=1e-6)
