"""Resuming finds a checkpoint whether it is one file or a folder of shards (DeepSpeed, sharded FSDP)."""

from __future__ import annotations

import pytest

from assay.errors import UserError
from assay.run.resume import checkpoint_to_resume


def test_last_finds_a_sharded_checkpoint_folder(tmp_path):
    shards = tmp_path / "checkpoints" / "last.ckpt" / "checkpoint"
    shards.mkdir(parents=True)
    (shards / "mp_rank_00_model_states.pt").write_bytes(b"")
    assert checkpoint_to_resume("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_last_finds_a_single_file(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert checkpoint_to_resume("last", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_last_without_a_checkpoint_starts_fresh(tmp_path, capsys):
    assert checkpoint_to_resume("last", tmp_path) is None
    assert "starting it from step 0" in capsys.readouterr().out


def test_a_named_checkpoint_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(UserError, match="neither a file nor a sharded checkpoint folder"):
        checkpoint_to_resume(str(tmp_path / "nope.ckpt"), tmp_path)
