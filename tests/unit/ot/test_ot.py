"""OT valuation (LAVA, GOT-D) and the embedders behind it, on hand-derivable and synthetic cases."""

import datasets
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from assay.embeddings import data_fingerprint, example_texts
from assay.embeddings.build import build_embedder
from assay.embeddings.column import Column
from assay.embeddings.hidden_mean import HiddenMean
from assay.embeddings.minilm import MiniLM
from assay.errors import UserError
from assay.selection import SelectionContext
from assay.selection.selectors import Top
from assay.selection.scorers.gotd import GotD
from assay.selection.scorers.lava import Lava
from assay.ot import (
    Labels,
    SolverOptions,
    batched_potentials,
    c_transform,
    calibrated_gradient,
    exact_potentials,
    feature_cost,
    fit_subsample,
    label_distances,
    ot_values,
    sinkhorn_potentials,
    solve,
)
from assay.selection.scorers.ot import check_classes, check_pair
from tests.conftest import USER_MODEL_CACHE

SOLVERS = ["exact", "sinkhorn", "batched"]


def valued(x, y, labels_x=None, labels_y=None, **options):
    """``ot_values`` with the solver options as keywords (no progress bars)."""
    options.setdefault("progress", False)
    labels = None if labels_x is None else Labels(labels_x, labels_y)
    return ot_values(x, y, SolverOptions(**options), labels)


# -- values against hand-derived cases ------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_points_one_target(solver):
    # All mass goes to the single target y = 0: f_i = c(x_i, 0) − g, so with c = ‖x‖²/2 the duals are
    # f = (0, 50) − g and the calibrated gradients are f_0 − f_1 = −50 and f_1 − f_0 = +50.
    r = valued(np.array([[0.0], [10.0]]), np.array([[0.0]]), solver=solver)
    np.testing.assert_allclose(r.values, [-50.0, 50.0], atol=1e-3)


@pytest.mark.parametrize("solver", SOLVERS)
def test_many_points_one_target_closed_form(solver):
    # With one target point the transport is forced; value_i = c_i − Σ_{j≠i} c_j/(N−1) for every solver.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(1, 3))
    c = 0.5 * ((x - y) ** 2).sum(1)
    r = valued(x, y, solver=solver, batch_size=3)
    np.testing.assert_allclose(r.values, c - (c.sum() - c) / 6, atol=1e-4)


def test_calibrated_gradient_ignores_a_constant_shift_of_the_duals():
    f = np.array([1.0, 4.0, -2.0, 0.5])
    v = calibrated_gradient(f)
    np.testing.assert_allclose(v, calibrated_gradient(f + 17.0))
    np.testing.assert_allclose(v[0], 1.0 - (4.0 - 2.0 + 0.5) / 3)
    np.testing.assert_allclose(v.sum(), 0.0, atol=1e-12)


def test_exact_duals_are_feasible_and_tight():
    import ot

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    r = valued(x, y, solver="exact")
    m = feature_cost(torch.tensor(x), torch.tensor(y)).numpy()
    assert (r.f[:, None] + r.g[None, :] <= m + 1e-9).all()  # u_i + v_j <= M_ij
    cost = ot.emd2(np.full(6, 1 / 6), np.full(4, 1 / 4), m)
    np.testing.assert_allclose(r.f.mean() + r.g.mean(), cost, atol=1e-9)  # no duality gap


def test_label_distance_of_separated_classes():
    # Class a sits at 0 and class b at 10 on both sides: W(a, a) = W(b, b) = 0, W(a, b) = 10²/2 = 50.
    x = np.array([[0.0], [0.0], [10.0]])
    y = np.array([[0.0], [10.0], [10.0]])
    w = label_distances(x, np.array(["a", "a", "b"]), y, np.array(["a", "b", "b"]), ["a", "b"], 500, 0)
    np.testing.assert_allclose(w, [[0.0, 50.0], [50.0, 0.0]])


# -- solvers agree ----------------------------------------------------------------------------------


def clusters(n, m, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(4, d))
    x = centres[rng.integers(4, size=n)] + rng.normal(size=(n, d))
    y = centres[rng.integers(4, size=m)] + rng.normal(size=(m, d))
    return x, y


def test_exact_and_sinkhorn_rankings_agree():
    x, y = clusters(300, 200)
    exact = valued(x, y, solver="exact").values
    for solver in ("sinkhorn", "batched"):
        approx = valued(x, y, solver=solver, reg=0.01, tol=1e-5, batch_size=64).values
        assert spearmanr(exact, approx).statistic > 0.95, solver


def test_batched_sinkhorn_equals_pot_log_sinkhorn():
    x, y = clusters(120, 50, seed=3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    eps = 0.5
    f_pot, g_pot = sinkhorn_potentials(feature_cost(xt, yt), eps, 5000, 1e-10)
    f, g, _ = batched_potentials(xt, yt, eps, 5000, 1e-10, batch_size=17, progress=False)
    # POT's plan is u_i K_ij v_j, ours a_i b_j exp((f_i + g_j − C_ij)/ε): ε·log u = f + ε·log a, ε·log v = g + ε·log b
    f, g = f + eps * np.log(1 / 120), g + eps * np.log(1 / 50)
    shift = (f - f_pot).mean()  # duals are unique up to f + c, g − c
    np.testing.assert_allclose(f - shift, f_pot, atol=1e-6)
    np.testing.assert_allclose(g + shift, g_pot, atol=1e-6)


def test_eps_scaling_reaches_the_same_potentials_in_fewer_sweeps():
    x, y = clusters(150, 60, seed=4)
    xt, yt = torch.tensor(x), torch.tensor(y)
    eps = 0.05 * float(feature_cost(xt, yt).mean())
    f, _, cold = batched_potentials(xt, yt, eps, 5000, 1e-6, batch_size=40, progress=False)
    fa, _, warm = batched_potentials(xt, yt, eps, 5000, 1e-6, batch_size=40, progress=False, eps_start=20 * eps, eps_decay=0.5)
    np.testing.assert_allclose(fa - fa.mean(), f - f.mean(), atol=1e-4 * np.abs(f).max())
    assert warm < cold


def test_auto_solver_switches_by_problem_size():
    x, y = clusters(40, 30)
    assert valued(x, y).solver == "sinkhorn"
    assert valued(x, y, dense_max_cells=10).solver == "batched"
    assert valued(x, y, solver="exact").solver == "exact"


def test_batched_sinkhorn_survives_columns_that_underflow():
    # A target point far from the whole pool: at the first sweep exp(−(C_ij − min_j' C_ij')/ε) is below
    # the smallest float64 for every pool point, so its column receives no representable mass and the
    # sweep's column step is redone in the log domain. The iterates stay those of log-domain Sinkhorn.
    from scipy.special import logsumexp

    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 2))
    y = np.vstack([rng.normal(size=(9, 2)), [[10.0, 10.0]]])
    eps, sweeps = 0.05, 40
    c = feature_cost(torch.tensor(x), torch.tensor(y)).numpy()
    assert ((c[:, -1] - c.min(1)) / eps > 800).all()  # exp(−800) underflows float64
    g = np.zeros(10)
    for _ in range(sweeps):  # the same half-steps, written with log-sum-exps
        f = -eps * logsumexp((g[None, :] - c) / eps + np.log(1 / 10), axis=1)
        g = -eps * logsumexp((f[:, None] - c) / eps + np.log(1 / 30), axis=0)
    fb, gb, n = batched_potentials(torch.tensor(x), torch.tensor(y), eps, sweeps, 0.0, batch_size=7)
    assert n == sweeps
    np.testing.assert_allclose(fb, f, atol=1e-8)
    np.testing.assert_allclose(gb, g, atol=1e-8)


# -- out-of-sample potentials: subsample fit + c-transform ------------------------------------------


def topics(n, m, d=16, k=8, seed=0):
    """Unit vectors around k topic directions; the target over-weights three topics (as GOT-D's setting:
    a target that the pool under-represents)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(k, d))
    t /= np.linalg.norm(t, axis=1, keepdims=True)

    def draw(count, w):
        c = rng.choice(k, size=count, p=w / w.sum())
        z = t[c] + rng.normal(scale=0.25, size=(count, d))
        return z / np.linalg.norm(z, axis=1, keepdims=True), c

    x, cx = draw(n, np.ones(k))
    y, cy = draw(m, np.where(np.arange(k) < 3, 3.0, 1.0))
    return x, y, cx, cy


def test_c_transform_of_the_sinkhorn_g_is_the_sinkhorn_f(one_thread):
    # The soft c-transform is the Sinkhorn row update: at the fixed point it returns f itself.
    x, y = clusters(200, 40, seed=6)
    xt, yt = torch.tensor(x), torch.tensor(y)
    eps = 0.05 * float(feature_cost(xt, yt).mean())
    f, g, _ = batched_potentials(xt, yt, eps, 20_000, 1e-10, batch_size=64, progress=False, eps_start=20 * eps)
    np.testing.assert_allclose(c_transform(xt, yt, torch.tensor(g), eps, 33), f, atol=1e-7 * np.abs(f).max())
    # λ scales the cost: the transform of g for λ·c is that of g/λ for c, times λ
    np.testing.assert_allclose(c_transform(xt, yt, torch.tensor(3 * g), 3 * eps, 50, lambda_x=3.0), 3 * f, atol=1e-6 * np.abs(f).max())


def test_hard_c_transform_of_the_lp_dual_is_the_lp_dual():
    # Complementary slackness: every pool point ships mass, so u_i = min_j (C_ij − v_j).
    x, y = clusters(80, 30, seed=7)
    xt, yt = torch.tensor(x), torch.tensor(y)
    u, v = exact_potentials(feature_cost(xt, yt))
    np.testing.assert_allclose(c_transform(xt, yt, torch.tensor(v), None, 16), u, atol=1e-9)


@pytest.fixture
def one_thread():
    """Small cost blocks: one thread avoids OpenMP barrier waits when the machine's cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_subsample_fit_ranks_like_the_whole_pool_solve(one_thread):
    # Fitted on about half the pool, the c-transformed values rank like the whole-pool solve:
    # Spearman 0.993–0.997 over seeds 0–7 of this problem (0.984–0.992 with a quarter of the pool).
    x, y, _, _ = topics(2000, 200)
    full = valued(x, y, solver="batched", batch_size=500)
    sub = valued(x, y, solver="batched", batch_size=500, fit_size=1000)
    assert full.fit_size is None and 1000 <= sub.fit_size < 1200
    assert spearmanr(full.values, sub.values).statistic > 0.97
    # exact: LP duals of the subsample, hard c-transform (0.989–0.995 over seeds 0–7)
    exact = valued(x, y, solver="exact")
    exact_sub = valued(x, y, solver="exact", fit_size=1000)
    assert spearmanr(exact.values, exact_sub.values).statistic > 0.96


def test_subsample_fit_with_labels_ranks_like_the_whole_pool_solve(one_thread):
    x, y, cx, cy = topics(2000, 200)
    lx, ly = cx % 2, cy % 2
    full = valued(x, y, labels_x=lx, labels_y=ly, solver="batched", batch_size=500)
    sub = valued(x, y, labels_x=lx, labels_y=ly, solver="batched", batch_size=500, fit_size=500)
    assert spearmanr(full.values, sub.values).statistic > 0.96  # 0.989–0.995 over seeds 0–7


def test_stratified_subsample_keeps_every_stratum_mass():
    rng = np.random.default_rng(0)
    strata = rng.choice([3, 7, 7, 7, 11, 40], size=1000) * 10 + (rng.random(1000) < 0.01)  # a few tiny strata
    idx, w = fit_subsample(1000, 100, 0, strata)
    assert len(set(idx.tolist())) == len(idx) and (np.diff(idx) > 0).all()
    for c in np.unique(strata):  # each stratum is in the subsample, with exactly the pool's mass
        assert (strata[idx] == c).any()
        np.testing.assert_allclose(w[strata[idx] == c].sum(), (strata == c).mean())
    np.testing.assert_array_equal(fit_subsample(1000, 100, 0, strata)[0], idx)  # seeded
    uniform, wu = fit_subsample(1000, 100, 0)
    assert len(uniform) == 100 and np.allclose(wu, 0.01)


def test_subsample_fit_keeps_the_groups_of_a_balanced_pool_apart(one_thread):
    # Three far-apart groups with the same shares in pool and target: the whole-pool duals do not shift
    # the groups against each other. A uniform subsample's group shares are off by its sampling noise,
    # which would shift whole groups; stratifying by nearest target point matches them exactly.
    ctx, bad = pool_and_target()
    x, y = np.asarray(ctx.train["embedding"]), np.asarray(ctx.splits["val"]["embedding"])
    full = valued(x, y, solver="batched").values
    sub = valued(x, y, solver="batched", fit_size=120).values
    assert roc_auc_score(bad, full) > 0.99 and roc_auc_score(bad, sub) > 0.99
    assert spearmanr(full, sub).statistic > 0.97


def test_fit_size_at_least_the_pool_or_zero_is_the_whole_pool_solve():
    x, y = clusters(60, 20, seed=8)
    full = valued(x, y)
    for fit in (0, None, 60, 1000):
        r = valued(x, y, fit_size=fit)
        assert r.fit_size is None
        np.testing.assert_array_equal(r.values, full.values)
    assert set(full.timings) == {"fit_wall_s", "fit_cpu_s"}
    sub = valued(x, y, fit_size=30)
    assert 30 <= sub.fit_size < 60
    assert set(sub.timings) == {f"{phase}_{clock}_s" for phase in ("stratify", "fit", "extend") for clock in ("wall", "cpu")}


@pytest.mark.parametrize("bad", [-1, 2.5, "big", True])
def test_fit_size_must_be_a_non_negative_integer(bad):
    with pytest.raises(UserError, match=r"^selection.fit_size=.*non-negative integer") as e:
        GotD(fit_size=bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"fit_size must be a non-negative integer"):
        SolverOptions(fit_size=bad)


# -- solver options: the one place a solver is chosen ------------------------------------------------


def test_solver_options_resolve_auto_by_cost_cells():
    o = SolverOptions(dense_max_cells=100)
    assert (o.resolve(100), o.resolve(101)) == ("sinkhorn", "batched")
    assert SolverOptions(solver="exact", dense_max_cells=1).resolve(10**9) == "exact"
    assert [SolverOptions(fit_size=f).fit_rows(50) for f in (None, 0, 50, 80, 20)] == [None, None, None, None, 20]
    with pytest.raises(ValueError, match="solver must be one of"):
        SolverOptions(solver="lp")


@pytest.mark.parametrize("solver", SOLVERS)
def test_solve_gives_the_target_potential_the_c_transform_extends(solver):
    # Every solver's g is in the form the c-transform reads: extending g to the pool reproduces the
    # solve's own f (up to the constant the duals are defined up to), for weights a and b not uniform.
    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.normal(size=(40, 3))), torch.tensor(rng.normal(size=(15, 3)))
    a = torch.tensor(rng.uniform(0.5, 1.5, size=40))
    b = torch.tensor(rng.uniform(0.5, 1.5, size=15))
    a, b = a / a.sum(), b / b.sum()
    eps = 0.1 * float(feature_cost(x, y).mean())
    p = solve(x, y, solver, eps, SolverOptions(max_iter=20_000, tol=1e-10, batch_size=16, eps_scaling=None, progress=False), a=a, b=b)
    assert (p.eps is None) == (solver == "exact") and (p.sweeps is not None) == (solver == "batched")
    f = c_transform(x, y, torch.tensor(p.g), p.eps, 16, b, progress=False)
    if solver == "sinkhorn":  # POT's ε·log u = f + ε·log a
        f = f + eps * np.log(a.numpy())
    np.testing.assert_allclose(f - f.mean(), p.f - p.f.mean(), atol=1e-6 * np.abs(p.f).max())


# -- detection on synthetic embeddings --------------------------------------------------------------


def test_shifted_points_get_the_highest_values():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 16))
    x = rng.normal(size=(500, 16))
    corrupted = rng.random(500) < 0.2
    x[corrupted] += 1.5  # a feature shift: corrupted points lie off the target distribution
    for solver in SOLVERS:
        values = valued(x, y, solver=solver).values
        assert roc_auc_score(corrupted, values) > 0.95, solver


def test_label_cost_finds_flipped_labels():
    # Two classes far apart; 20% of pool labels flipped. Features alone cannot see the flip; the
    # class-wise cost of LAVA can.
    rng = np.random.default_rng(0)
    means = np.array([[0.0] * 8, [4.0] * 8])
    ly = rng.integers(2, size=200)
    y = means[ly] + rng.normal(size=(200, 8))
    true = rng.integers(2, size=600)
    x = means[true] + rng.normal(size=(600, 8))
    flipped = rng.random(600) < 0.2
    lx = np.where(flipped, 1 - true, true)
    with_labels = valued(x, y, labels_x=lx, labels_y=ly).values
    without = valued(x, y).values
    assert roc_auc_score(flipped, with_labels) > 0.95
    assert roc_auc_score(flipped, without) < 0.7


# -- bad input: one line each -----------------------------------------------------------------------


def test_nan_embeddings_are_refused():
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    with pytest.raises(UserError, match=r"selection.embedder='pool'.*NaN/inf.*rows \[2\]"):
        check_pair(x, np.ones((2, 3)))
    y = np.ones((2, 3))
    y[0, 0] = np.inf
    with pytest.raises(UserError, match=r"'target'.*NaN/inf"):
        check_pair(np.ones((4, 3)), y)


def test_mismatched_dimensions_are_refused():
    with pytest.raises(UserError, match=r"pool dim 3 vs target dim 5.*same dimension"):
        check_pair(np.ones((4, 3)), np.ones((2, 5)))


def test_empty_target_is_refused():
    with pytest.raises(UserError, match=r"selection.target_split.*empty"):
        check_pair(np.ones((4, 3)), np.ones((0, 3)))


def test_classes_must_match_between_pool_and_target():
    x, y = np.random.default_rng(0).normal(size=(6, 2)), np.random.default_rng(1).normal(size=(4, 2))
    with pytest.raises(UserError, match=r"selection.label_column='source': target classes \['c'\] do not occur in the training pool"):
        check_classes(np.array(list("aaabbb")), np.array(list("abcc")), "source")
    with pytest.raises(UserError, match=r"training classes \['b'\] do not occur in the target set"):
        check_classes(np.array(list("aaabbb")), np.array(list("aaaa")), "source")


def test_single_line_messages():
    for call in (
        lambda: check_pair(np.ones((4, 3)), np.ones((2, 5))),
        lambda: check_pair(np.full((2, 2), np.nan), np.ones((2, 2))),
        lambda: Lava(embedder="nope"),
        lambda: Lava(embedder="hidden_mean", embedder_options={"weigting": "position"}),
    ):
        with pytest.raises(UserError) as e:
            call()
        assert "\n" not in str(e.value)


def test_config_errors_name_the_field():
    with pytest.raises(UserError, match=r"selection.embedder='nope'.*must be one of \['column', 'hidden_mean', 'minilm'\]"):
        Lava(embedder="nope")
    with pytest.raises(UserError, match=r"selection.embedder_options=\['weigting'\].*hidden_mean"):
        Lava(embedder="hidden_mean", embedder_options={"weigting": "position"})
    with pytest.raises(UserError, match=r"selection.solver"):
        GotD(solver="fast")
    with pytest.raises(UserError, match=r"selection.reg"):
        Lava(reg=0.0)


# -- the selection entries on a dataset with an embedding column ------------------------------------


def pool_and_target(n=240, m=60, p=0.25, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(3, 12))
    src = rng.permutation(np.arange(n) % 3)  # the target's class shares, so the shift is the only signal
    x = means[src] + rng.normal(size=(n, 12))
    bad = rng.random(n) < p
    x[bad] += 2.0
    tsrc = np.arange(m) % 3
    y = means[tsrc] + rng.normal(size=(m, 12))

    def rows(emb, sources, prefix, flags=None):
        out = []
        for i, (e, s) in enumerate(zip(emb, sources)):
            r = {"id": f"{prefix}{i}", "source": f"s{s}", "prompt": "q", "completion": f"a{i}", "embedding": e.tolist()}
            if flags is not None:
                r["is_corrupted"] = bool(flags[i])
            out.append(r)
        return datasets.Dataset.from_list(out)

    train, val = rows(x, src, "t", bad), rows(y, tsrc, "v")
    return SelectionContext(train, datasets.DatasetDict({"train": train, "val": val})), bad


@pytest.mark.parametrize("entry", [Lava, GotD])
def test_entries_keep_the_clean_points(entry, tmp_path):
    ctx, bad = pool_and_target()
    ctx.run_dir = tmp_path
    sel = entry(embedder="column", selector=Top(fraction=0.5), seed=0).select(ctx)
    assert roc_auc_score(~bad, sel.scores) > 0.9  # keep score: higher = clean
    assert sel.kept.sum() == 120 and bad[sel.kept].mean() < 0.05
    assert (tmp_path / "ot_values.parquet").is_file()


@pytest.mark.parametrize("entry", [Lava, GotD])
def test_entries_keep_the_clean_points_from_a_subsample_fit(entry, tmp_path):
    ctx, bad = pool_and_target()
    ctx.run_dir = tmp_path
    sel = entry(embedder="column", selector=Top(fraction=0.5), fit_size=120, seed=0).select(ctx)
    assert roc_auc_score(~bad, sel.scores) > 0.9 and bad[sel.kept].mean() < 0.05


def test_lava_label_column_problems(tmp_path):
    ctx, _ = pool_and_target()
    with pytest.raises(UserError, match=r"selection.label_column='skill': not a column of the train split"):
        Lava(embedder="column", label_column="skill", seed=0).score(ctx)
    ctx.splits["val"] = ctx.splits["val"].filter(lambda r: r["source"] != "s2")
    with pytest.raises(UserError, match=r"training classes \['s2'\] do not occur in the target set"):
        Lava(embedder="column", seed=0).score(ctx)
    assert len(Lava(embedder="column", label_column=None, seed=0).score(ctx)) == len(ctx.train)


def test_empty_or_missing_target_split():
    ctx, _ = pool_and_target()
    ctx.splits["val"] = ctx.splits["val"].select([])
    with pytest.raises(UserError, match=r"selection.target_split='val': is empty"):
        GotD(embedder="column", seed=0).score(ctx)
    with pytest.raises(UserError, match=r"selection.target_split='dev': not a split"):
        GotD(embedder="column", target_split="dev", seed=0).score(ctx)


def test_embedding_column_with_nan_is_refused():
    ctx, _ = pool_and_target()
    ctx.train = ctx.train.map(lambda r, i: {"embedding": [float("nan")] * 12 if i == 3 else r["embedding"]}, with_indices=True)
    with pytest.raises(UserError, match=r"NaN/inf.*rows \[3\]"):
        Lava(embedder="column", seed=0).score(ctx)


# -- embedders --------------------------------------------------------------------------------------


def test_embedder_cache_is_keyed_by_config_and_data(tmp_path):
    ds = datasets.Dataset.from_list([{"id": "a", "prompt": "p", "completion": "x", "embedding": [1.0, 2.0]}, {"id": "b", "prompt": "p", "completion": "y", "embedding": [3.0, 4.0]}])
    col = Column(cache=True)
    first = col.embed(ds, cache_dir=tmp_path)
    files = list((tmp_path / "embeddings").glob("*.npy"))
    assert len(files) == 1 and np.array_equal(np.load(files[0]), first)
    np.save(files[0], first + 100)  # a cached file is what the next call returns
    assert np.array_equal(col.embed(ds, cache_dir=tmp_path), first + 100)
    other = ds.map(lambda r: {"completion": r["completion"] + "!"})
    col.embed(other, cache_dir=tmp_path)  # new texts -> new key
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 2
    assert data_fingerprint(ds, example_texts(ds)) != data_fingerprint(other, example_texts(other))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


class Pad:
    pad_token_id = 0


def test_hidden_mean_pools_the_last_hidden_state(tmp_path):
    model = tiny_llama()
    ds = datasets.Dataset.from_list(
        [{"id": "a", "prompt": "p", "completion": "c", "prompt_ids": [5, 6], "completion_ids": [7, 8, 9]}, {"id": "b", "prompt": "p", "completion": "d", "prompt_ids": [4], "completion_ids": [3]}]
    )
    emb = HiddenMean(batch_size=2).embed(ds, model, Pad(), tmp_path)
    with torch.no_grad():
        h = model(input_ids=torch.tensor([[5, 6, 7, 8, 9]]), output_hidden_states=True).hidden_states[-1][0]
    np.testing.assert_allclose(emb[0], h.mean(0).numpy(), atol=1e-5)  # padding in the batch changes nothing
    weighted = HiddenMean(weighting="position", cache=False).embed(ds, model, Pad())
    w = torch.arange(1, 6, dtype=torch.float32)[:, None]
    np.testing.assert_allclose(weighted[0], ((h * w).sum(0) / w.sum()).numpy(), atol=1e-5)
    response = HiddenMean(response_only=True, cache=False).embed(ds, model, Pad())
    np.testing.assert_allclose(response[0], h[2:].mean(0).numpy(), atol=1e-5)
    # other weights -> another cache entry, never the stale one
    other = tiny_llama()
    with torch.no_grad():
        other.model.norm.weight.mul_(2.0)
    assert not np.allclose(HiddenMean().embed(ds, other, Pad(), tmp_path), emb)


def test_hidden_mean_needs_the_model():
    ds = datasets.Dataset.from_list([{"id": "a", "prompt": "p", "completion": "c"}])
    with pytest.raises(UserError, match="needs the run's model"):
        HiddenMean().embed(ds)
    assert build_embedder("hidden_mean").needs_model and Lava(embedder="hidden_mean").needs_model and not Lava(embedder="column").needs_model


def test_minilm_missing_directory_is_one_line(tmp_path):
    ds = datasets.Dataset.from_list([{"id": "a", "prompt": "p", "completion": "c"}])
    with pytest.raises(UserError, match=r"selection.embedder_options.path=.*assay-fetch minilm"):
        MiniLM(path=str(tmp_path / "none")).embed(ds)


@pytest.mark.skipif(not (USER_MODEL_CACHE / "all-MiniLM-L6-v2" / "config.json").is_file(), reason="run `assay-fetch minilm` first")
def test_minilm_embeds_offline_and_puts_paraphrases_close(tmp_path):
    ds = datasets.Dataset.from_list(
        [
            {"id": "a", "prompt": "", "completion": "a cat sits on the mat"},
            {"id": "b", "prompt": "", "completion": "a kitten rests on a rug"},
            {"id": "c", "prompt": "", "completion": "stock markets fell sharply today"},
        ]
    )
    emb = MiniLM(path=str(USER_MODEL_CACHE / "all-MiniLM-L6-v2"), response_only=True).embed(ds, cache_dir=tmp_path)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5 > sim[0, 2]
