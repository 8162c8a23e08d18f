from dataclasses import dataclass

import datasets
import numpy as np
import pytest

from assay.errors import UserError
from assay.selection import Scorer, SelectionContext
from assay.selection.detection import FLAGS, auroc, detection_report
from assay.selection.selectors import All, AnchorQuantile, KeepContext, Quota, Threshold, Top


@dataclass
class ByValue(Scorer):
    """Test scorer: the ``value`` column is the score."""

    name: str = "by_value"
    budget = 0.5

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


def keep(selector, scores, c=None):
    """The selector's mask and what it measured, for the ByValue scorer over ``c``."""
    context = KeepContext(c if c is not None else ctx(len(scores)), ByValue(selector=selector))
    return selector.keep(np.asarray(scores, dtype=float), context).tolist(), context.measured


def test_all_keeps_everything():
    assert keep(All(), [3.0, np.nan, -1.0])[0] == [True, True, True]


def test_top_fraction_count_and_the_scorers_budget():
    scores = [0.3, 0.9, np.nan, 0.1, 0.9]  # NaN ranks last, ties by position
    assert keep(Top(fraction=0.4), scores)[0] == [False, True, False, False, True]  # floor(0.4 x 5) = 2
    assert keep(Top(count=3), scores)[0] == [True, True, False, False, True]
    assert keep(Top(count=1, fraction=0.8), scores)[0] == [False, True, False, False, False]  # count wins
    mask, measured = keep(Top(), scores)  # no fraction: the scorer's budget, 0.5 -> floor(2.5) = 2
    assert mask == [False, True, False, False, True] and measured == {"fraction": 0.5}
    with pytest.raises(UserError, match="selection.selector.count=9: exceeds the 5 training examples"):
        keep(Top(count=9), scores)
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(UserError, match=r"selection.selector.fraction.*\(0, 1\]"):
            Top(fraction=fraction)
    with pytest.raises(UserError, match="selection.selector.count=0"):
        Top(count=0)


def test_threshold():
    assert keep(Threshold(threshold=0.3), [0.3, 0.29, np.nan, 5.0]) == ([True, False, False, True], {"threshold": 0.3})
    with pytest.raises(UserError, match="selection.selector.threshold=None"):
        Threshold()


def test_anchor_quantile_is_clues_global_threshold():
    # anchors score 10, 12, 14: the median is 12, the 0 quantile 10
    mask, measured = keep(AnchorQuantile(quantile=0.5), list(range(20)), ctx(anchor=[10.0, 12.0, 14.0]))
    assert mask == [i >= 12 for i in range(20)] and measured == {"anchor_threshold": 12.0, "anchor_size": 3, "anchor_nan": 0, "pool_nan": 0}
    assert sum(keep(AnchorQuantile(quantile=0.0), list(range(20)), ctx(anchor=[10.0, 12.0]))[0]) == 10
    with pytest.raises(UserError, match="selection.selector.quantile=1.5"):
        AnchorQuantile(quantile=1.5)


def test_anchor_quantile_with_unscorable_anchors_ranks_them_lowest():
    """NaN anchors rank lowest (as -inf); numpy's linear interpolation between -inf and a score (or
    -inf) is NaN, which kept nothing. The threshold is the limit instead: any weight on -inf gives -inf."""
    nan = float("nan")
    scores = [*range(19), nan]  # one unscorable candidate
    # sorted anchors [-inf, -inf, -inf, 10, 12]; q = 0.6 -> position 2.4, between -inf and 10 -> -inf
    mask, measured = keep(AnchorQuantile(quantile=0.6), scores, ctx(n=20, anchor=[nan, 10.0, nan, 12.0, nan]))
    assert measured["anchor_threshold"] == -np.inf and measured["anchor_nan"] == 3 and measured["pool_nan"] == 1
    assert mask == [True] * 20  # everything >= -inf, the NaN candidate too (it compares as -inf)
    # q = 0.25 -> position 1 exactly, an unscorable anchor: -inf (numpy: -inf + (-inf - -inf) x 0 = NaN)
    assert keep(AnchorQuantile(quantile=0.25), scores, ctx(n=20, anchor=[nan, 10.0, nan, 12.0, nan]))[0] == [True] * 20
    # q = 0.9 -> position 3.6, between 10 and 12 -> 11.2: the NaN candidate (-inf) is not kept
    mask, measured = keep(AnchorQuantile(quantile=0.9), scores, ctx(n=20, anchor=[nan, 10.0, nan, 12.0, nan]))
    assert measured["anchor_threshold"] == pytest.approx(11.2) and mask == [i >= 12 for i in range(19)] + [False]
    # q = 0 is the lowest anchor: -inf when any anchor is NaN, else the lowest score
    assert keep(AnchorQuantile(quantile=0.0), scores, ctx(n=20, anchor=[10.0, nan]))[1]["anchor_threshold"] == -np.inf
    assert keep(AnchorQuantile(quantile=0.0), scores, ctx(n=20, anchor=[12.0, 10.0]))[1]["anchor_threshold"] == 10.0
    sel = ByValue(selector=AnchorQuantile(quantile=0.5)).select(ctx(anchor=[nan, nan, nan, 14.0]))
    assert sel.kept.all() and sel.metadata["anchor_nan"] == 3 and sel.metadata["pool_nan"] == 0


def test_anchor_empty_or_overlapping_is_one_clear_line():
    with pytest.raises(UserError, match="anchor set is empty"):
        keep(AnchorQuantile(), list(range(20)), ctx(anchor=[]))
    c = ctx(anchor=[1.0])
    c.splits["val"] = c.train.select(range(3))
    with pytest.raises(UserError) as e:
        keep(AnchorQuantile(), list(range(20)), c)
    assert "shares 3 ids with train" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="selection.selector.split='test'"):
        keep(AnchorQuantile(split="test"), list(range(20)), ctx(anchor=[1.0]))


def test_per_source_quotas():
    # sources alternate b, a, b, a, ...: a holds the odd values 1..19, b the even ones
    mask, measured = keep(Quota(quotas={"a": 0.2}, fraction=1.0), list(range(20)))
    assert np.flatnonzero(mask).tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 18, 19]  # all of b, the top 2 of a
    assert measured == {"quota_by": "source", "quota_groups": {"a": [10, 2], "b": [10, 10]}}
    assert sum(keep(Quota(quotas={"a": 0.2}), list(range(20)))[0]) == 2 + 5  # b keeps the scorer's budget, half
    with pytest.raises(UserError, match="selection.selector.quotas"):
        keep(Quota(quotas={"zzz": 0.5}), list(range(20)))
    with pytest.raises(UserError, match="selection.selector.quotas.a=1.5"):
        Quota(quotas={"a": 1.5})
    with pytest.raises(UserError, match="selection.selector.clusters=0"):
        Quota(clusters=0)


def test_quotas_by_any_column():
    c = ctx()
    level = np.arange(20) % 4  # four groups of five
    c = SelectionContext(c.train.add_column("level", level.tolist()), c.splits)
    kept, measured = keep(Quota(by="level", quotas={"0": 0.4}, fraction=0.6), list(range(20)), c)
    kept = np.asarray(kept)
    assert np.flatnonzero(kept & (level == 0)).tolist() == [12, 16]  # top 2 of {0, 4, 8, 12, 16}
    for g in (1, 2, 3):  # floor(0.6 x 5) = 3 each, the top of each group
        assert np.flatnonzero(kept & (level == g)).tolist() == [g + 8, g + 12, g + 16]
    assert measured["quota_groups"] == {"0": [5, 2], "1": [5, 3], "2": [5, 3], "3": [5, 3]}
    with pytest.raises(UserError, match="selection.selector.by='lvl': is not a column of the training data"):
        keep(Quota(by="lvl"), list(range(20)), c)
    with pytest.raises(UserError, match=r"selection.selector.quotas=\['9'\]: names groups not in the training pool \(selection.selector.by=level\)"):
        keep(Quota(by="level", quotas={"9": 0.5}), list(range(20)), c)
    with pytest.raises(UserError, match="selection.selector.by='cluster'.*no model"):
        keep(Quota(by="cluster"), list(range(20)), c)


def test_a_scorer_selects_through_its_selector():
    sel = ByValue(selector=Top(fraction=0.25)).select(ctx())
    assert np.flatnonzero(sel.kept).tolist() == [15, 16, 17, 18, 19]
    assert sel.metadata["scorer"] == "by_value" and sel.metadata["selector"] == "top"
    sel = ByValue(selector=AnchorQuantile(quantile=0.5)).select(ctx(anchor=[10.0, 12.0, 14.0]))
    assert sel.metadata["anchor_threshold"] == 12.0 and sel.kept.sum() == 8
    # a selector read back from a run's config.yaml (a mapping) is built as its entry
    assert ByValue(selector={"name": "threshold", "threshold": 17.5}).select(ctx()).kept.sum() == 2
    with pytest.raises(UserError, match="selection.selector"):
        ByValue(selector="top")


def test_one_list_of_noise_flags():
    from assay.data.noise import Corrupt

    pool = datasets.Dataset.from_dict({"id": ["0", "1"], "prompt": ["q"] * 2, "completion": ["a", "b"]})
    assert "is_corrupted" in FLAGS and set(Corrupt(p=0.4, seed=0).apply(pool, "sft").column_names) & set(FLAGS) == {"is_corrupted"}


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y, s = rng.random(200) < 0.3, rng.integers(0, 5, 200).astype(float)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_detection_metrics_in_metadata():
    sel = ByValue(selector=Top(fraction=0.5)).select(ctx(flags=True))
    det = sel.metadata["detection"]["is_corrupted"]
    assert det["auroc"] == 1.0 and det["precision_at_k"] == 1.0 and det["k"] == 5 and det["kept_rate"] == 0.0
    assert ByValue(selector=All()).select(ctx()).metadata["detection"] == {}


def test_detection_report_inverted_scores():
    train = datasets.Dataset.from_dict({"id": ["a", "b", "c", "d"], "is_flipped": [True, False, False, False]})
    rep = detection_report(train, np.array([4.0, 3.0, 2.0, 1.0]), np.ones(4, bool))
    assert rep["is_flipped"]["auroc"] == 0.0 and rep["is_flipped"]["precision_at_k"] == 0.0


def test_selection_saves_metadata(tmp_path):
    sel = ByValue(selector=Top(fraction=0.5)).select(ctx(flags=True))
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
    from assay.selection.baselines import RandomSelection

    n = 2000
    pool = datasets.Dataset.from_dict({"id": [str(i) for i in range(n)], "prompt": ["q"] * n, "completion": [f"a {i}" for i in range(n)]})
    noisy = Corrupt(p=p, seed=0).apply(pool, "sft")
    sel = RandomSelection(seed=0, selector=Top(fraction=1 - p)).select(SelectionContext(noisy))
    report = sel.metadata["detection"]["is_corrupted"]
    assert abs(report["auroc"] - 0.5) < 0.06  # std of a null AUROC here is about 0.015
    assert abs(report["kept_rate"] - report["pool_rate"]) < 0.05
