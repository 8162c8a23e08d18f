"""Progress of a run's long phases (assay.run.progress) and the Trainer's bars (assay.run.progress_bars)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from assay.run import progress


@pytest.fixture
def clock(monkeypatch):
    """A clock the test moves by hand (``clock.now``), seen by the progress module."""
    now = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(progress.time, "monotonic", lambda: now.now)
    monkeypatch.setattr(progress, "interactive", lambda stream=None: False)  # as in a SLURM log or a pipe
    progress.set_enabled(True)
    yield now
    progress.set_enabled(True)


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "assay"]


def test_a_long_phase_without_a_terminal_prints_a_line_every_tenth_with_eta(clock, caplog):
    caplog.set_level("INFO", logger="assay")
    with progress.Progress("reference log-probs (train)", total=200) as p:
        for _ in range(200):
            clock.now += 0.5  # 100 s in all
            p.update()
    printed = lines(caplog)
    assert len(printed) == 10, printed  # 10 %, 20 %, ..., 100 %: a few lines, not one per batch
    assert printed[0] == "reference log-probs (train): 20/200 (10%), 0:00:10 elapsed, ETA 0:01:30 (2.00 batch/s)"
    assert printed[-1].startswith("reference log-probs (train): 200/200 (100%), 0:01:40 elapsed, ETA 0:00:00")


def test_a_short_phase_prints_nothing_and_disabled_progress_prints_nothing(clock, caplog):
    caplog.set_level("INFO", logger="assay")
    assert list(progress.track(range(50), "selection scoring")) == list(range(50))  # no time passes: a short phase
    progress.set_enabled(False)  # trainer.enable_progress_bar=false
    for _ in progress.track(range(20), "selection scoring"):
        clock.now += 10
    assert lines(caplog) == []


def test_slow_items_show_seconds_per_item_and_a_finite_eta(clock, caplog):
    caplog.set_level("INFO", logger="assay")
    with progress.Progress("testing", total=10) as p:
        clock.now += 45  # one test batch of generation takes 45 s
        p.update()
    assert lines(caplog) == ["testing: 1/10 (10%), 0:00:45 elapsed, ETA 0:06:45 (45.0 s/batch)"]
    assert progress.rate_text(0.02) == "50.0 s/it" and progress.rate_text(3.2) == "3.20 it/s" and progress.rate_text(None) == "? s/it"


def test_a_resumed_count_measures_its_rate_from_where_it_started(clock):
    rate = progress.Rate(total=2500, initial=2000)  # resumed at step 2000
    clock.now += 100
    rate.done = 2100
    assert rate.per_second == pytest.approx(1.0) and rate.remaining == pytest.approx(400.0)


def fake_trainer(**kw):
    ready = kw.pop("ready", 0)
    base = dict(max_epochs=-1, max_steps=24, global_step=0, accumulate_grad_batches=1, num_training_batches=6)
    return SimpleNamespace(**{**base, **kw}, fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(
        batch_progress=SimpleNamespace(current=SimpleNamespace(ready=ready)))))


def test_the_training_bar_counts_the_batches_an_epoch_really_runs():
    from assay.run.progress_bars import StepBoundProgressBar

    bar = StepBoundProgressBar()
    bar._trainer = fake_trainer(global_step=21)  # a fresh epoch with 3 steps left: 3 batches
    assert bar.total_train_batches == 3
    bar._trainer = fake_trainer(global_step=20, accumulate_grad_batches=2, num_training_batches=12)  # 4 steps x 2 batches
    assert bar.total_train_batches == 8  # Lightning's own bar said 4 and then counted to 8
    # Resumed at batch 18 of a 30-batch epoch, 6 steps before max_steps: the bar starts after the first
    # batch it runs, which Lightning numbers 19; the epoch ends at batch 24 of 24 (Lightning's: 24/6).
    bar._trainer = fake_trainer(global_step=19, num_training_batches=30, ready=19)
    bar._done_before = bar._trainer.fit_loop.epoch_loop.batch_progress.current.ready
    assert bar.total_train_batches == 24
    bar._trainer = fake_trainer(max_epochs=3, max_steps=-1, num_training_batches=30)  # bounded by epochs: the whole epoch
    assert bar.total_train_batches == 30


def test_step_bounded_runs_show_no_negative_epoch_count(monkeypatch):
    from assay.run import progress_bars

    assert progress_bars.lightning_progress(False) == [] and not progress.enabled()
    monkeypatch.setattr(progress_bars, "interactive", lambda stream=None: True)
    (bar,) = progress_bars.lightning_progress(True)
    assert isinstance(bar, progress_bars.StepBoundProgressBar) and progress.enabled()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(0).strip() == "Epoch 0"
    bar._trainer = SimpleNamespace(max_epochs=3)
    assert bar._get_train_description(1).strip() == "Epoch 1/2"
    monkeypatch.setattr(progress_bars, "interactive", lambda stream=None: False)  # a SLURM log: plain lines
    assert isinstance(progress_bars.lightning_progress(True)[0], progress_bars.PlainLoopProgress)


def test_training_and_testing_print_plain_lines_without_a_terminal(clock, caplog):
    from assay.run.progress_bars import PlainLoopProgress

    caplog.set_level("INFO", logger="assay")
    bar = PlainLoopProgress()
    bar.get_metrics = lambda trainer, module: {"train/loss": 1.25}
    trainer = SimpleNamespace(max_steps=2500, global_step=2000, num_test_batches=[4])  # resumed at step 2000
    bar.on_train_start(trainer, None)
    for _ in range(500):
        clock.now += 2.0
        trainer.global_step += 1
        bar.on_train_batch_end(trainer, None, None, None, 0)
    bar.on_train_end(trainer, None)
    bar.on_test_epoch_start(trainer, None)
    for _ in range(4):
        clock.now += 30
        bar.on_test_batch_end(trainer, None, None, None, 0)
    bar.on_test_epoch_end(trainer, None)
    printed = lines(caplog)
    training = [line for line in printed if line.startswith("training: ")]
    # a resumed run says where it stands once it has run a few seconds, then at every tenth
    assert training[0] == "training: 2003/2500 (80%), 0:00:06 elapsed, ETA 0:16:34 (2.0 s/step), train/loss 1.25"
    assert training[1] == "training: 2250/2500 (90%), 0:08:20 elapsed, ETA 0:08:20 (2.0 s/step), train/loss 1.25"
    assert training[-1].startswith("training: 2500/2500 (100%)") and len(training) == 3
    assert [line.split(",")[0] for line in printed if line.startswith("testing: ")] == [f"testing: {k}/4 ({25 * k}%)" for k in range(1, 5)]
