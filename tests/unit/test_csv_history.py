"""metrics.csv across a resume: earlier rows kept, rows of redone steps not doubled, nothing written
before the resumed run logs."""

import pandas as pd

from assay.loggers import history_csv_logger


def _earlier_run(run_dir):
    rows = [{"step": s, "train/loss": 10.0 - s, "val/loss": None} for s in range(6)] + [{"step": 3, "train/loss": None, "val/loss": 7.5}]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)


def test_resumed_run_continues_the_file(tmp_path):
    _earlier_run(tmp_path)
    logger = history_csv_logger(tmp_path, resume_step=3)  # the checkpoint was saved at step 3
    for step in (3, 4):
        logger.log_metrics({"train/loss": 100.0 + step, "train/new_metric": 1.0}, step=step)
        logger.save()
    logger.finalize("success")
    got = pd.read_csv(tmp_path / "metrics.csv")
    assert got["step"].tolist() == [0, 1, 2, 3, 4]  # 3..5 of the killed run were redone: not kept
    assert got["train/loss"].tolist() == [10.0, 9.0, 8.0, 103.0, 104.0]
    assert "val/loss" in got and "train/new_metric" in got  # the union of both runs' columns


def test_nothing_is_written_until_the_resumed_run_logs(tmp_path):
    _earlier_run(tmp_path)
    before = (tmp_path / "metrics.csv").read_bytes()
    logger = history_csv_logger(tmp_path, resume_step=3)
    logger.log_hyperparams({"lr": 0.1})
    logger.save()  # e.g. the run stops on a refused checkpoint before its first step
    assert (tmp_path / "metrics.csv").read_bytes() == before


def test_fresh_start_in_an_existing_directory_replaces_the_rows(tmp_path):
    _earlier_run(tmp_path)
    logger = history_csv_logger(tmp_path, resume_step=0)  # resumed before its first checkpoint: from step 0
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [0]


def test_the_row_a_kill_cut_off_comes_from_the_checkpoint(tmp_path):
    """A step checkpoint is written before Lightning logs the batch's row: killed in between, the
    file lacks that row and the checkpoint carries it."""
    rows = [{"step": s, "train/loss": 10.0 - s} for s in range(3)]  # checkpoint at step 4; row 3 never reached the file
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    logger = history_csv_logger(tmp_path, resume_step=4, pending_row={"train/loss": 7.0, "epoch": 0, "step": 3})
    logger.log_metrics({"train/loss": 6.0, "epoch": 0}, step=4)
    logger.save()
    got = pd.read_csv(tmp_path / "metrics.csv")
    assert got["step"].tolist() == [0, 1, 2, 3, 4]
    assert got["train/loss"].tolist() == [10.0, 9.0, 8.0, 7.0, 6.0]


def test_a_pending_row_already_in_the_file_is_not_doubled(tmp_path):
    rows = [{"step": s, "train/loss": 10.0 - s, "epoch": 0} for s in range(4)] + [{"step": 3, "train/loss": None, "epoch": 0, "val/loss": 7.5}]
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    logger = history_csv_logger(tmp_path, resume_step=4, pending_row={"train/loss": 7.0, "epoch": 0, "step": 3})
    logger.log_metrics({"train/loss": 6.0, "epoch": 0}, step=4)
    logger.save()
    got = pd.read_csv(tmp_path / "metrics.csv")
    assert got["step"].tolist() == [0, 1, 2, 3, 3, 4] and got["train/loss"].isna().sum() == 1
