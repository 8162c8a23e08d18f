"""A loss weighter with ``objective.aggregator.scope=global`` on two ranks (gloo, CPU) equals the weighter on the
concatenated batch, as DataFlex's LossWeighter gathers every rank's losses before normalising and multiplies each
rank's Σ w·ℓ by the world size (so DDP's gradient average is the gradient of the global weighted sum)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import torch
import torch.multiprocessing as mp

from assay.objectives.loss_weighters import LinUpper
from tests.unit.objectives.test_dr_dpo_distributed import SIZES, WORLD, batch, free_port
from tests.unit.objectives.test_dr_dpo_distributed import per_pair_loss as per_sample_loss



def worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        x, kept, w0 = batch()
        start = sum(SIZES[:rank])
        mine = slice(start, start + SIZES[rank])
        w = w0.clone().requires_grad_(True)
        value, _ = LinUpper(scope="global").reduce(per_sample_loss(w, x[mine]), kept[mine])
        value.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)
        grad /= WORLD  # DDP averages gradients over ranks
        torch.save({"value": value.detach(), "grad": grad}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.cli
def test_global_scope_on_two_ranks_equals_one_process_on_the_whole_batch(tmp_path):
    ctx = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 180.0
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError("the two gloo ranks did not finish")
    ranks = [torch.load(f"{tmp_path}/rank{r}.pt") for r in range(WORLD)]
    x, kept, w0 = batch()
    w = w0.clone().requires_grad_(True)
    whole, _ = LinUpper().reduce(per_sample_loss(w, x), kept)
    whole.backward()
    # each rank holds world · (its share of the global Σ w·ℓ): their mean is the global loss
    assert torch.allclose(sum(r["value"] for r in ranks) / WORLD, whole.detach(), atol=1e-6)
    for r in ranks:
        assert torch.allclose(r["grad"], w.grad, atol=1e-6)
