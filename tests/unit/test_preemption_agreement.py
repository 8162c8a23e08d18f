"""Under several processes a requeue signal seen by one rank makes every rank checkpoint at the same batch."""

from __future__ import annotations

import json
import signal
import socket
from datetime import timedelta
from pathlib import Path

import pytest

import torch.multiprocessing as mp

from assay.run.preemption import agreed_signal

WORLD = 2
SIGNAL_AT = {0: 3, 1: 5}  # the batch at which each rank's handler ran


def worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        acted = None
        for batch in range(8):
            pending = int(signal.SIGUSR2) if batch >= SIGNAL_AT[rank] else None
            if agreed_signal(pending) is not None:
                acted = batch
                break
        with open(f"{out}/{rank}.json", "w") as f:
            json.dump({"batch": acted}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.cli
def test_every_rank_checkpoints_at_the_first_rank_signal_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(worker, args=(port, str(tmp_path)), nprocs=WORLD, start_method="spawn")
    batches = [json.loads((tmp_path / f"{r}.json").read_text())["batch"] for r in range(WORLD)]
    assert batches == [3, 3]


def test_one_process_acts_on_its_own_signal():
    assert agreed_signal(None) is None
    assert agreed_signal(int(signal.SIGTERM)) == int(signal.SIGTERM)


def test_a_failed_checkpoint_save_removes_its_partial_file_and_names_the_checkpoint(tmp_path, monkeypatch):
    import errno

    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    from assay.errors import environment_problem
    from assay.run.preemption import AtomicCheckpointIO

    def half_written(self, checkpoint, path, storage_options=None):
        Path(path).write_bytes(b"x" * 1000)  # what was written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", half_written)
    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    with pytest.raises(OSError) as e:
        AtomicCheckpointIO().save_checkpoint({}, target)
    assert list(target.parent.iterdir()) == []  # no .last.ckpt.tmp left filling the disk
    assert e.value.filename == str(target) and str(target) in environment_problem(e.value)
