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
