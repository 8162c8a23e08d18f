from dataclasses import dataclass

import datasets
import numpy as np
import pytest

from assay.errors import UserError
from assay.selection import SelectionConfig, SelectionContext, auroc, detection_report


@dataclass
class ByValue(SelectionConfig):
    """Test scorer: the ``value`` column is the score."""

    name: str = "by_value"

    def score(self, ctx):
        return np.asarray(ctx.train["value"], dtype=float)


def ctx(n=20, anchor=None, flags=False):
    rows = {"id": [f"t{i}" for i in range(n)], "value": list(range(n)), "source": ["a" if i % 2 else "b" for i in range(n)]}
    if flags:
        rows["is_corrupted"] = [i < n // 4 for i in range(n)]  # the lowest values are the noisy ones
    train = datasets.Dataset.from_dict(rows)
    splits = {"train": train}
    if anchor is not None:
        splits["val"] = datasets.Dataset.from_dict({"id": [f"a{i}" for i in range(len(anchor))], "value": anchor, "source": ["a"] * len(anchor)})
    return SelectionContext(train, datasets.DatasetDict(splits))


def test_top_fraction_and_count():
    assert np.flatnonzero(ByValue(fraction=0.25).select(ctx()).kept).tolist() == [15, 16, 17, 18, 19]
    assert np.flatnonzero(ByValue(count=3).select(ctx()).kept).tolist() == [17, 18, 19]
    with pytest.raises(UserError, match="selection.count=30: exceeds"):
        ByValue(count=30).select(ctx())


def test_threshold():
    assert ByValue(keep_rule="threshold", threshold=17.5).select(ctx()).kept.sum() == 2
    with pytest.raises(UserError, match="selection.threshold"):
        ByValue(keep_rule="threshold")


def test_anchor_quantile_is_clues_global_threshold():
    sel = ByValue(keep_rule="anchor_quantile", anchor_quantile=0.5).select(ctx(anchor=[10.0, 12.0, 14.0]))
    assert sel.metadata["anchor_threshold"] == 12.0 and np.flatnonzero(sel.kept).tolist() == list(range(12, 20))
    assert ByValue(keep_rule="anchor_quantile", anchor_quantile=0.0).select(ctx(anchor=[10.0, 12.0])).kept.sum() == 10


def test_anchor_empty_or_overlapping_is_one_clear_line():
    with pytest.raises(UserError, match="anchor set is empty"):
        ByValue(keep_rule="anchor_quantile").select(ctx(anchor=[]))
    c = ctx(anchor=[1.0])
    c.splits["val"] = c.train.select(range(3))
    with pytest.raises(UserError) as e:
        ByValue(keep_rule="anchor_quantile").select(c)
    assert "shares 3 ids with train" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="selection.anchor_split='test'"):
        ByValue(keep_rule="anchor_quantile", anchor_split="test").select(ctx(anchor=[1.0]))


def test_per_source_quotas():
    sel = ByValue(keep_rule="quota", quotas={"a": 0.2}, fraction=1.0).select(ctx())
    src = np.asarray(ctx().train["source"])
    assert sel.kept[src == "b"].all() and sel.kept[src == "a"].sum() == 2
    assert np.flatnonzero(sel.kept & (src == "a")).tolist() == [17, 19]  # the top of source a
    with pytest.raises(UserError, match="selection.quotas"):
        ByValue(keep_rule="quota", quotas={"zzz": 0.5}).select(ctx())


def test_quotas_by_any_column():
    c = ctx()
    level = np.arange(20) % 4  # four groups of five
    c = SelectionContext(c.train.add_column("level", level.tolist()), c.splits)
    sel = ByValue(keep_rule="quota", quota_by="level", quotas={"0": 0.4}, fraction=0.6).select(c)
    assert np.flatnonzero(sel.kept & (level == 0)).tolist() == [12, 16]  # top 2 of {0, 4, 8, 12, 16}
    for g in (1, 2, 3):  # floor(0.6 x 5) = 3 each, the top of each group
        assert np.flatnonzero(sel.kept & (level == g)).tolist() == [g + 8, g + 12, g + 16]
    assert sel.metadata["quota_groups"] == {"0": [5, 2], "1": [5, 3], "2": [5, 3], "3": [5, 3]}
    with pytest.raises(UserError, match="selection.quota_by='lvl': is not a column of the training data"):
        ByValue(keep_rule="quota", quota_by="lvl").select(c)
    with pytest.raises(UserError, match=r"selection.quotas=\['9'\]: names groups not in the training pool \(selection.quota_by=level\)"):
        ByValue(keep_rule="quota", quota_by="level", quotas={"9": 0.5}).select(c)
    with pytest.raises(UserError, match="selection.quota_by='cluster'.*no model"):
        ByValue(keep_rule="quota", quota_by="cluster").select(c)


def test_bad_rule_and_backward_compatible_default():
    with pytest.raises(UserError, match="selection.keep_rule='best'"):
        ByValue(keep_rule="best")
    assert SelectionConfig(name="x").select(ctx()).kept.all()  # fraction 1.0: the old keep-everything default


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y, s = rng.random(200) < 0.3, rng.integers(0, 5, 200).astype(float)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_detection_metrics_in_metadata():
    sel = ByValue(fraction=0.5).select(ctx(flags=True))
    det = sel.metadata["detection"]["is_corrupted"]
    assert det["auroc"] == 1.0 and det["precision_at_k"] == 1.0 and det["k"] == 5 and det["kept_rate"] == 0.0
    assert ByValue().select(ctx()).metadata["detection"] == {}


def test_detection_report_inverted_scores():
    train = datasets.Dataset.from_dict({"id": ["a", "b", "c", "d"], "is_flipped": [True, False, False, False]})
    rep = detection_report(train, np.array([4.0, 3.0, 2.0, 1.0]), np.ones(4, bool))
    assert rep["is_flipped"]["auroc"] == 0.0 and rep["is_flipped"]["precision_at_k"] == 0.0


def test_selection_saves_metadata(tmp_path):
    sel = ByValue(fraction=0.5).select(ctx(flags=True))
    sel.save(tmp_path / "selection.parquet")
    import json

    assert json.loads((tmp_path / "selection.json").read_text())["detection"]["is_corrupted"]["auroc"] == 1.0


def test_target_set_filters_sources_and_names_unknown_ones():
    import datasets
    import pytest

    from assay.errors import UserError
    from assay.selection import SelectionContext, TargetSet

    val = datasets.Dataset.from_list([{"id": f"v{i}", "source": "add" if i % 3 else "copy"} for i in range(9)])
    train = datasets.Dataset.from_list([{"id": "t0", "source": "add"}])
    ctx = SelectionContext(train, datasets.DatasetDict({"train": train, "val": val}))
    assert set(TargetSet(target_sources=["copy"]).target(ctx)["source"]) == {"copy"}
    assert len(TargetSet().target(ctx)) == 9
    with pytest.raises(UserError, match=r"selection.target_sources=\['sort'\]: not sources of the val split"):
        TargetSet(target_sources=["sort"]).target(ctx)
    with pytest.raises(UserError, match=r"selection.target_split='train'"):
        TargetSet(target_split="train").target(ctx)


@pytest.mark.parametrize("p", [0.2, 0.4])
def test_random_selection_is_independent_of_the_noise(p):
    """selection=random and noise share the run's seed; the random subset must not know which rows
    the noise touched (detection AUROC ≈ 0.5, kept share of noisy rows ≈ the pool's)."""
    from assay.data.noise import Corrupt
    from assay.selection import RandomSelection

    n = 2000
    pool = datasets.Dataset.from_dict({"id": [str(i) for i in range(n)], "prompt": ["q"] * n, "completion": [f"a {i}" for i in range(n)]})
    noisy = Corrupt(p=p, seed=0).apply(pool, "sft")
    sel = RandomSelection(seed=0, fraction=1 - p).select(SelectionContext(noisy))
    report = sel.metadata["detection"]["is_corrupted"]
    assert abs(report["auroc"] - 0.5) < 0.06  # std of a null AUROC here is about 0.015
    assert abs(report["kept_rate"] - report["pool_rate"]) < 0.05
