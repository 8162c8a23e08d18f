"""Work before training runs on rank 0 only and reaches every rank (two gloo ranks, CPU)."""

from __future__ import annotations

import json
import socket
import time
from datetime import timedelta
from pathlib import Path
import pytest

import torch.multiprocessing as mp

WORLD = 2
ROWS = 9  # does not divide by WORLD: rank 1's shard repeats row 0


def eval_metrics(rank: int, world: int) -> dict:
    """``AssayModule._log_eval`` over this rank's shard of a held-out set of per-sample values."""
    from types import SimpleNamespace

    import pytorch_lightning as pl

    from assay.config import EvalConfig
    from assay.data.datamodule import eval_shard
    from assay.module import AssayModule

    module = object.__new__(AssayModule)
    pl.LightningModule.__init__(module)
    module.evaluation, module._trainer = EvalConfig(), SimpleNamespace(world_size=world)
    module._eval_sums = {"loss": [], "exact_match": [], "pref_acc": []}
    for row in eval_shard(ROWS, rank, world):
        source = "abc"[row % 3]
        module._eval_sums["loss"].append((row, source, 0.1 * row + 0.05))
        module._eval_sums["exact_match"].append((row, source, float(row % 3 == 0)))
        module._eval_sums["pref_acc"].append((row, source, float(row % 2)))
    logged: dict = {}
    module.log_dict = lambda metrics, **kwargs: logged.update(metrics)
    module._log_eval("test")
    return logged


def worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from assay.run import distributed
    from assay.errors import UserError

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    calls = Path(out_dir) / "calls.log"

    def selection():
        with open(calls, "a") as f:
            f.write(f"select {rank}\n")
        return {"kept": [1, 3, 5], "by": rank}

    def cached():
        with open(calls, "a") as f:
            f.write(f"cache {rank}\n")
        return rank

    def bad():
        raise UserError("selection.selector.fraction", 2.0, "must be in (0, 1]")

    result = {"once": distributed.once(selection), "first": distributed.rank_zero_first(cached)}
    try:
        distributed.once(bad)
    except UserError as e:
        result["error"] = str(e)
    result["main"] = distributed.is_main()
    result["eval"] = eval_metrics(rank, WORLD)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result))
    assert distributed.finish(ok=True) == 0  # barrier, then the group is torn down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cli
def test_once_computes_on_rank_zero_and_every_rank_gets_the_result(tmp_path):
    ctx = mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 600
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise TimeoutError("the two gloo ranks did not finish")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls.count("select 0") == 1 and "select 1" not in calls  # computed once, on rank 0
    assert calls.index("cache 0") < calls.index("cache 1")  # rank 0 fills the cache before the others read it
    for r in ranks:
        assert r["once"] == {"kept": [1, 3, 5], "by": 0}  # rank 0's result on every rank
        assert r["error"] == "selection.selector.fraction=2.0: must be in (0, 1]"  # rank 0's user error on every rank
    assert [r["first"] for r in ranks] == [0, 1] and [r["main"] for r in ranks] == [True, False]
    # evaluation: per-sample values gathered from both shards, each row once, equal to one process
    one = eval_metrics(0, 1)
    assert one["test/exact_match"] == 3 / 9 and one["test/pref_acc"] == 4 / 9 and one["test/exact_match/a"] == 1.0
    assert ranks[0]["eval"] == ranks[1]["eval"] == one
