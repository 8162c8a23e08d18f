"""Selection and ordering end to end (debug=fast): detection metrics reach summary.json."""

import json

import pytest

from tests.conftest import detection_from_artefact, run_in_hydra

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("selection", ["el2n", "perplexity"])
def test_scorer_run_reports_detection(tmp_path, selection):
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", f"selection={selection}", "selection.allow_untrained=true", "ordering=folding"], tmp_path)
    det = summary["selection"]["detection"]["is_corrupted"]
    redone = detection_from_artefact(tmp_path / "selection.parquet", "is_corrupted")
    assert det["k"] == redone["k"] > 0
    assert det["auroc"] == pytest.approx(redone["auroc"]) and det["precision_at_k"] == pytest.approx(redone["precision_at_k"])
    assert summary["data"]["kept_examples"] == summary["data"]["train_examples"] // 2
    assert json.loads((tmp_path / "summary.json").read_text())["selection"]["scorer"] == selection
    assert (tmp_path / "selection.json").is_file()


def test_quota_per_cluster_of_the_models_embeddings(tmp_path):
    """selector=quota with by=cluster: k-means on the model's embeddings, the top half of each cluster."""
    summary = run_in_hydra(["debug=fast", "selection=el2n", "selection.allow_untrained=true", "selection/selector=quota", "selection.selector.by=cluster", "selection.selector.clusters=3", "selection.selector.fraction=0.5"], tmp_path)
    groups = summary["selection"]["quota_groups"]
    assert sorted(groups) == ["c0", "c1", "c2"] and sum(size for size, _ in groups.values()) == summary["data"]["train_examples"]
    assert all(kept == size // 2 for size, kept in groups.values())
    assert summary["data"]["kept_examples"] == sum(kept for _, kept in groups.values())


def test_curriculum_by_difficulty_with_anchor_quantile(tmp_path):
    summary = run_in_hydra(["debug=fast", "selection=grand", "selection.allow_untrained=true", "selection/selector=anchor_quantile", "selection.params=[layers.1.mlp]", "ordering=curriculum"], tmp_path)
    import pandas as pd

    sel = pd.read_parquet(tmp_path / "selection.parquet")
    threshold = summary["selection"]["anchor_threshold"]
    # the anchor selector keeps exactly the pool scores at or above the anchors' quantile
    assert summary["data"]["kept_examples"] == int(sel["kept"].sum()) == int((sel["score"] >= threshold).sum())
    assert 0 < summary["data"]["kept_examples"] < len(sel)


def test_warmup_then_forgetting_and_clues(tmp_path):
    """A warm-up stage records dynamics and checkpoints; later scorers read them by run directory."""
    warm = tmp_path / "warm"
    run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "trainer.max_steps=30", "data.max_train_examples=40"], warm)
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "selection=cartography", f"selection.dynamics_from={warm}"], tmp_path / "carto")
    assert "is_corrupted" in summary["selection"]["detection"]
    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40", "selection=clues", f"selection.dynamics_from={warm}", "selection.params=[layers.1.mlp]"], tmp_path / "clues")
    assert "is_corrupted" in summary["selection"]["detection"] and "anchor_threshold" in summary["selection"]


def test_probe_checkpoints_and_final_model_feed_later_scorers(tmp_path):
    """The detection protocol: a probe keeps one checkpoint per interval; a model scorer given the
    probe scores with the probe's final weights (not the fresh model it trains), and detection is
    reported as flat metrics."""
    import numpy as np
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM

    from assay.selection.scorers.model_scores import token_statistics

    common = ["debug=fast", "noise=corrupt", "noise.p=0.3", "data.max_train_examples=40"]
    probe = tmp_path / "probe"
    run_in_hydra([*common, "trainer.max_steps=12", "keep_checkpoints=true", "checkpoint_every_n_steps=4"], probe)
    kept = sorted(p.name for p in (probe / "checkpoints").glob("step=*.ckpt"))
    assert kept == ["step=000004.ckpt", "step=000008.ckpt", "step=000012.ckpt"]

    summary = run_in_hydra([*common, "selection=perplexity", f"selection.dynamics_from={probe}"], tmp_path / "scored")
    redone = detection_from_artefact(tmp_path / "scored" / "selection.parquet", "is_corrupted")
    assert summary["metrics"]["selection/is_corrupted/auroc"] == pytest.approx(redone["auroc"])
    assert summary["metrics"]["selection/is_corrupted/auroc"] == summary["selection"]["detection"]["is_corrupted"]["auroc"]
    # the scores are the probe's losses: recompute them from the probe's saved model
    from assay.data import build_examples
    from assay.config import validate
    from assay.data.collate import tokenize_split
    from transformers import AutoTokenizer
    from tests.conftest import compose_config

    spec = validate(compose_config([*common, "selection=perplexity", "selection.allow_untrained=true"]))
    train = build_examples(spec.data, spec.mixture, spec.noise).splits["train"]
    tokenizer = AutoTokenizer.from_pretrained(probe / "tokenizer")
    tokenized = tokenize_split(train, tokenizer, "sft", spec.data.separator, spec.data.max_length)
    model = AutoModelForCausalLM.from_pretrained(probe / "model", dtype=torch.float32)
    expected = -token_statistics(model, tokenized, tokenizer.pad_token_id, 16)["loss"]
    scores = pd.read_parquet(tmp_path / "scored" / "selection.parquet")["score"].to_numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_scoring_model_from_a_directory_that_is_not_a_run(tmp_path):
    from assay.errors import UserError

    with pytest.raises(UserError, match="selection.dynamics_from"):
        run_in_hydra(["debug=fast", "selection=el2n", f"selection.dynamics_from={tmp_path}"], tmp_path / "run")


def test_forward_inf_run_reports_its_cost(tmp_path):
    """selection=forward_inf end to end: one Adam step on the val split, the pool scored by its loss
    drop, half kept, the cost per pool example in the selection metadata."""
    import numpy as np
    import pandas as pd

    summary = run_in_hydra(["debug=fast", "noise=corrupt", "noise.p=0.3", "selection=forward_inf", "selection.allow_untrained=true"], tmp_path)
    meta = summary["selection"]
    assert meta["scorer"] == "forward_inf" and summary["data"]["kept_examples"] == summary["data"]["train_examples"] // 2
    assert meta["cost"]["seconds_per_example"] > 0 and meta["cost"]["forward_passes_per_example"] == 2
    assert meta["cost"]["target_examples"] == summary["data"]["val_examples"]
    scores = pd.read_parquet(tmp_path / "selection.parquet")["score"].to_numpy()
    assert np.isfinite(scores).all() and scores.std() > 0
    assert "is_corrupted" in meta["detection"]


def test_detect_noise_recipe_scores_with_its_probe(tmp_path):
    """The README's detection example (experiment=detect_noise), a few steps per stage: the train
    stage scores with the probe's weights (no allow_untrained needed) and reports detection."""
    summary = run_in_hydra(["experiment=detect_noise", "debug=fast", "trainer.max_steps=4", "trainer.val_check_interval=4"], tmp_path)
    probe, train = summary["stages"]["probe"], summary["stages"]["train"]
    assert probe["selection"]["scorer"] == "none" and train["selection"]["scorer"] == "el2n"
    assert train["data"]["kept_examples"] == int(0.7 * train["data"]["train_examples"])
    artefact = next(tmp_path.rglob("train*/selection.parquet"), None) or next(p for p in tmp_path.rglob("selection.parquet") if "probe" not in str(p))
    assert summary["metrics"]["selection/is_corrupted/auroc"] == pytest.approx(detection_from_artefact(artefact, "is_corrupted")["auroc"])
