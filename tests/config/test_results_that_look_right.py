"""Runs that used to finish and look right when they were not: a curriculum over constant keys (a
shuffle), and a scorer that reads what a model has learned run on random weights."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assay.errors import UserError
from assay.ordering.curricula import AntiCurriculum, Blocked, Curriculum, Folding, Interleaved
from tests.conftest import run_assay as assay_train

FAST = ["debug=fast", "logger=none", "trainer.enable_progress_bar=false"]





def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


# ---- orderings over constant keys ------------------------------------------------------------------


@pytest.mark.cli
def test_curriculum_over_selection_none_is_refused_before_anything_is_built(tmp_path):
    line = one_error_line(assay_train([*FAST, "ordering=curriculum", "ordering.score_from=selection"], tmp_path))
    assert "ordering.score_from='selection'" in line and "selection=none" in line and "plain shuffle" in line
    assert not list(tmp_path.rglob("config.yaml"))  # refused in the preflight: no run directory


def test_folding_by_default_reads_selection_scores_and_is_refused_with_selection_none(compose_cfg):
    from assay.config import validate

    with pytest.raises(UserError, match="plain shuffle"):
        validate(compose_cfg(["ordering=folding"]))
    validate(compose_cfg(["ordering=folding", "ordering.score_from=difficulty"]))  # the skills corpus has levels 1-3


@pytest.mark.parametrize("ordering", [Curriculum(seed=0), AntiCurriculum(seed=0), Folding(seed=0)], ids=lambda o: o.name)
def test_sorting_orderings_refuse_constant_keys(ordering):
    rows = np.arange(10)
    with pytest.raises(UserError, match=r"all 10 rows the same key \(0\.0\).*plain shuffle"):
        ordering.order(rows, np.zeros(10), 0)
    # keys indexed by row: only the rows being ordered count (here the kept rows 0-4 all score 1)
    with pytest.raises(UserError, match="all 5 rows the same key"):
        ordering.order(np.arange(5), np.r_[np.ones(5), np.arange(5.0)], 0)
    assert sorted(ordering.order(rows, np.r_[np.zeros(9), 1.0], 0).tolist()) == rows.tolist()  # one differing key is enough


@pytest.mark.parametrize("ordering", [Blocked(seed=0), Interleaved(seed=0)], ids=lambda o: o.name)
def test_group_orderings_refuse_a_single_group(ordering):
    with pytest.raises(UserError, match=r"ordering.by='source'.*same key \('copy'\)"):
        ordering.order(np.arange(6), np.array(["copy"] * 6, dtype=object), 0)


@pytest.mark.cli
def test_difficulty_curriculum_over_data_without_difficulty_is_refused(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q {i}", "completion": f"a {i}"}) + "\n" for i in range(60)))
    line = one_error_line(assay_train([*FAST, "data=jsonl", f"data.train_file={f}", "ordering=curriculum"], tmp_path))
    assert "ordering.score_from='difficulty'" in line and "no difficulty levels" in line
    assert not list(tmp_path.rglob("summary.json"))


# ---- scorers that need a trained model ------------------------------------------------------------


@pytest.mark.cli
def test_el2n_on_a_random_init_is_refused_in_one_line(tmp_path):
    line = one_error_line(assay_train([*FAST, "noise=corrupt", "noise.p=0.3", "selection=el2n"], tmp_path))
    for fragment in ("selection='el2n'", "randomly initialised", "selection.dynamics_from", "selection.allow_untrained=true"):
        assert fragment in line, line


@pytest.mark.parametrize("scorer", ["perplexity", "el2n", "ifd", "grand", "clues", "less", "lqs"])
def test_every_loss_or_gradient_scorer_needs_a_trained_model(compose_cfg, scorer):
    from assay.config import validate

    with pytest.raises(UserError, match="randomly initialised"):
        validate(compose_cfg([f"selection={scorer}"]))
    assert validate(compose_cfg([f"selection={scorer}", "selection.allow_untrained=true"])).selection.allow_untrained


def test_a_trained_model_from_anywhere_is_accepted(compose_cfg, tmp_path):
    from assay.config import validate

    run = tmp_path / "probe"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "tokenizer").mkdir()
    validate(compose_cfg(["selection=el2n", f"selection.dynamics_from={run}"]))  # a probe's weights
    validate(compose_cfg(["selection=el2n", f"model.init_from={run}"]))  # an earlier stage's model
    validate(compose_cfg(["selection=el2n", "model=hf", "model.name_or_path=some-org/some-model"]))  # pretrained weights
    validate(compose_cfg(["selection=embed_sim"]))  # random-feature embeddings carry content: no trained model needed
    validate(compose_cfg(["selection=cartography", f"selection.dynamics_from={run}"]))


def test_the_capability_is_declared_by_the_scorer_not_looked_up_by_name():
    from assay.models.presets import HubModel, TinyLlama
    from assay.selection.baselines import KeepAll
    from assay.selection.scorers.model_scores import EL2N, EmbedSim

    assert EL2N(seed=0).needs_trained_model and not EmbedSim(seed=0).needs_trained_model and not KeepAll(seed=0).needs_trained_model
    assert TinyLlama(seed=0).randomly_initialised and not HubModel(seed=0, name_or_path="org/name").randomly_initialised


def test_end_of_run_table_shows_the_detection_auroc(capsys):
    from assay.train import print_summary

    metrics = {"test/exact_match": 0.5, "test/loss": 1.2, "selection/is_corrupted/auroc": 0.875, "selection/is_corrupted/precision_at_k": 0.6}
    print_summary({"metrics": metrics, "run_dir": "logs/x"})
    out = capsys.readouterr().out
    assert "test/exact_match" in out and "selection/is_corrupted/auroc" in out and "0.8750" in out


