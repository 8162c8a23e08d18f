"""Work before training (reference log-probs, selection scoring) runs where training will run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from assay.run.distributed import compute_device, on_device


def test_a_cpu_trainer_scores_on_the_cpu():
    assert compute_device(SimpleNamespace(accelerator="cpu")) == torch.device("cpu")


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
def test_a_gpu_trainer_scores_on_this_process_gpu(accelerator, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert compute_device(SimpleNamespace(accelerator=accelerator)) == torch.device("cuda", 1)


def test_on_device_moves_the_model_and_puts_it_back():
    model = torch.nn.Linear(2, 2)
    moved = []
    original_to = model.to

    def to(device):
        moved.append(torch.device(device))
        return original_to("cpu")  # record the move; stay on the CPU this machine has

    model.to = to
    with on_device(model, torch.device("cuda", 0)):
        assert moved == [torch.device("cuda", 0)]
    assert moved == [torch.device("cuda", 0), torch.device("cpu")]
    with on_device(model, torch.device("cpu")):  # already there: no move at all
        pass
    assert len(moved) == 2
