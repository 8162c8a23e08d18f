import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from assay.dynamics.store import PerSampleStore
from assay.errors import UserError
from assay.objectives.logps import sequence_logps
from assay.selection import SelectionContext
from assay.selection.selectors import Top
from assay.selection.scorers.dynamics_scores import BetaFilter, Cartography, Forgetting, cartography, forgetting_events
from assay.selection.scorers.gradient_scores import CLUES, LESS, GraNd
from assay.models.passes import padded_batches
from assay.selection.scorers.model_scores import EL2N, IFD, EmbedSim, KMeansDiverse, Perplexity, diversity_scores


class Tok:
    pad_token_id, bos_token_id = 0, 1


def tiny():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))


def split(n, prefix, seed):
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(n)],
        "source": ["a", "b"] * (n // 2),
        "prompt_ids": [[1] + rng.integers(2, 24, int(rng.integers(2, 5))).tolist() for _ in range(n)],
        "completion_ids": [rng.integers(2, 24, int(rng.integers(1, 4))).tolist() + [2] for _ in range(n)],
    })


def ctx(n=10):
    train = split(n, "t", 0)
    return SelectionContext(train, datasets.DatasetDict({"train": train, "val": split(4, "v", 1)}), tiny(), Tok())


def test_perplexity_and_el2n_match_a_direct_computation():
    c = ctx()
    losses, el2n = [], []
    for b in padded_batches(c.train, 0, 3):
        with torch.no_grad():
            lp = sequence_logps(c.model, b["input_ids"], b["attention_mask"], b["labels"])
            losses.append(-lp.sum / lp.count)
            logits = c.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
        t = b["labels"][:, 1:]
        m = t != -100
        err = (logits.softmax(-1) - torch.nn.functional.one_hot(t.clamp(min=0), 24)).norm(dim=-1)
        el2n.append((err * m).sum(-1) / m.sum(-1))
    assert np.allclose(Perplexity(batch_size=4).score(c), -torch.cat(losses).numpy(), atol=1e-5)
    assert np.allclose(EL2N(batch_size=4).score(c), -torch.cat(el2n).numpy(), atol=1e-5)
    assert np.allclose(EL2N(prefer="hard").score(c), torch.cat(el2n).numpy(), atol=1e-5)
    assert c.model.training  # mode restored after scoring


def test_ifd_is_the_loss_ratio_and_pushes_misaligned_below():
    c = ctx()
    s = IFD().score(c)
    assert s.shape == (10,) and np.isfinite(s).all()
    aligned = s[s > 0]
    assert (s[s <= 0] < aligned.min()).all() if len(aligned) else True


def test_model_scorers_need_the_model():
    c = ctx()
    c.model = None
    with pytest.raises(UserError, match="needs the run's model"):
        Perplexity().select(c)


def test_embed_sim_and_kmeans():
    c = ctx()
    sim = EmbedSim().score(c)
    assert sim.shape == (10,) and (sim <= 1 + 1e-6).all()
    c.train = c.splits["val"]
    assert np.allclose(EmbedSim().score(c), 1.0, atol=1e-5)  # each target is its own nearest target
    x = np.r_[np.zeros((6, 2)), np.ones((3, 2)) * 10] + np.random.default_rng(0).normal(0, 0.1, (9, 2))
    top = np.argsort(-diversity_scores(x, 2, 0))[:4]
    assert (top < 6).sum() == 2 and (top >= 6).sum() == 2  # a budget of 4 is split evenly across 2 clusters
    assert KMeansDiverse(clusters=3, seed=0).select(ctx()).kept.sum() == 5


def test_grand_is_the_per_sample_gradient_norm():
    from assay.models.grads import _sample_loss, grad_param_names

    c = ctx(4)
    s = GraNd(batch_size=3).score(c)
    names = grad_param_names(c.model)
    params = dict(c.model.named_parameters())
    for i, b in enumerate(padded_batches(c.train, 0, 1)):
        c.model.zero_grad()
        _sample_loss(c.model, params, {}, b["input_ids"][0], b["labels"][0]).backward()
        assert -s[i] == pytest.approx(torch.cat([params[n].grad.reshape(-1) for n in names]).norm().item(), rel=1e-4)


def test_clues_and_less_without_and_with_checkpoints(tmp_path):
    c = ctx(6)
    a = CLUES().score(c)
    assert a.shape == (6,)
    less = LESS(proj_dim=64, seed=0).score(c)
    assert (np.abs(less) <= 1 + 1e-6).all()
    # a fake warm-up stage: two Lightning-style checkpoints with Adam moments and learning rates
    trainable = [n for n, p in c.model.named_parameters() if p.requires_grad]
    (tmp_path / "checkpoints").mkdir()
    for step, lr in ((2, 2e-3), (4, 1e-3)):
        state = {"model." + k: v for k, v in c.model.state_dict().items()}
        opt = {i: {"exp_avg": torch.full_like(p, 0.01), "exp_avg_sq": torch.full_like(p, 1e-4)} for i, (_, p) in enumerate(c.model.named_parameters())}
        torch.save({"state_dict": state, "optimizer_states": [{"state": opt}], "lr_schedulers": [{"_last_lr": [lr]}]}, tmp_path / "checkpoints" / f"step={step}.ckpt")
    b = CLUES(dynamics_from=str(tmp_path), adam=False).score(c)
    assert np.allclose(b, a * (2e-3 + 1e-3) / 2, rtol=1e-4)  # same weights twice: Σ_c η_c s / C
    assert CLUES(dynamics_from=str(tmp_path)).score(c).shape == (6,)
    with pytest.raises(UserError, match="has no checkpoints"):
        CLUES(dynamics_from=str(tmp_path / "nowhere")).score(c)
    assert len(trainable) > 0


def test_less_projection_choice():
    c = ctx(6)
    exact = LESS(proj_dim=0).score(c)
    for kind in ("sjlt", "rademacher"):
        s = LESS(proj_dim=4096, seed=0, projection=kind).score(c)
        assert s.shape == (6,) and np.corrcoef(s, exact)[0, 1] > 0.9  # k >> the spread of 6 examples
    with pytest.raises(UserError, match="selection.projection"):
        LESS(projection="gaussian")


def write_store(root, rows):
    store = PerSampleStore(root / "dynamics")
    for step, group in pd.DataFrame(rows).groupby("step"):
        store.append(int(step), {k: group[k].tolist() for k in group.columns})
    store.flush()


def test_forgetting_by_hand(tmp_path):
    # id a: correct, wrong, correct, wrong -> 2 events; b: always correct -> 0; c: never correct -> 1000
    conf = {"a": [0.9, 0.1, 0.9, 0.1], "b": [0.9] * 4, "c": [0.1] * 4}
    rows = [{"id": i, "step": s, "epoch": s, "confidence": v[s]} for i, v in conf.items() for s in range(4)]
    write_store(tmp_path, rows)
    table = pd.DataFrame(rows)
    events = forgetting_events(table.assign(correct=table["confidence"] >= 0.5), 1000.0)
    assert events.to_dict() == {"a": 2.0, "b": 0.0, "c": 1000.0}
    train = datasets.Dataset.from_dict({"id": ["c", "a", "b"], "source": ["x"] * 3, "is_corrupted": [True, False, False]})
    sel = Forgetting(dynamics_from=str(tmp_path), selector=Top(count=2)).select(SelectionContext(train))
    assert sel.scores.tolist() == [-1000.0, -2.0, 0.0] and sel.metadata["detection"]["is_corrupted"]["auroc"] == 1.0


def test_forgetting_by_top1_correctness_hand_derived(tmp_path):
    """correct_by=top1 reads the recorded greedy-match flag, not a confidence threshold. id a is
    confident but wrong at step 1 (0.6 with correct 0) and right but unsure at step 2 (0.3 with
    correct 1): top-1 gives a 1 -> 0 -> 1 -> 1 history (1 event), confidence >= 0.5 gives
    1 -> 1 -> 0 -> 1 (1 event at a different step); id b: 1 -> 0 -> 0 -> 1 by top-1 (1 event), always
    >= 0.5 by confidence (0 events)."""
    rows = [
        {"id": i, "step": s, "epoch": s, "confidence": conf, "correct": float(ok)}
        for i, history in {"a": [(0.9, 1), (0.6, 0), (0.3, 1), (0.8, 1)], "b": [(0.9, 1), (0.7, 0), (0.6, 0), (0.9, 1)]}.items()
        for s, (conf, ok) in enumerate(history)
    ]
    write_store(tmp_path, rows)
    train = datasets.Dataset.from_dict({"id": ["a", "b"], "source": ["x"] * 2})
    top1 = Forgetting(dynamics_from=str(tmp_path), correct_by="top1", prefer="forgettable", selector=Top(count=1)).select(SelectionContext(train))
    by_conf = Forgetting(dynamics_from=str(tmp_path), prefer="forgettable", selector=Top(count=1)).select(SelectionContext(train))
    assert top1.scores.tolist() == [1.0, 1.0] and by_conf.scores.tolist() == [1.0, 0.0]
    write_store(tmp_path / "conf_only", [{"id": i, "step": 0, "epoch": 0, "confidence": 0.9} for i in "ab"])
    with pytest.raises(UserError, match=r"selection.correct_by='top1': the store of .* has none of \['correct', 'pref_acc'\]"):
        Forgetting(dynamics_from=str(tmp_path / "conf_only"), correct_by="top1").select(SelectionContext(train))
    with pytest.raises(UserError, match="selection.correct_by='argmax'"):
        Forgetting(correct_by="argmax")


def test_cartography_regions(tmp_path):
    conf = {"easy": [0.9, 0.95, 0.9], "hard": [0.1, 0.05, 0.1], "amb": [0.1, 0.9, 0.5]}
    rows = [{"id": i, "step": e, "epoch": e, "confidence": v[e]} for i, v in conf.items() for e in range(3)]
    write_store(tmp_path, rows)
    carto = cartography(pd.DataFrame(rows))
    assert carto.loc["amb", "variability"] == pytest.approx(np.std([0.1, 0.9, 0.5]))
    assert carto.loc["easy", "correctness"] == 3 and carto.loc["hard", "correctness"] == 0
    train = datasets.Dataset.from_dict({"id": ["easy", "hard", "amb"], "source": ["x"] * 3})
    top = {r: np.array(["easy", "hard", "amb"])[Cartography(dynamics_from=str(tmp_path), region=r, selector=Top(count=1)).select(SelectionContext(train, run_dir=tmp_path)).kept][0] for r in ("easy", "hard", "ambiguous")}
    assert top == {"easy": "easy", "hard": "hard", "ambiguous": "amb"}
    assert (tmp_path / "cartography.parquet").is_file()


def test_beta_filter_drops_margin_outliers(tmp_path):
    margins = {"p0": 0.1, "p1": 0.2, "p2": 0.15, "p3": -3.0, "p4": 0.12}
    write_store(tmp_path, [{"id": i, "step": 0, "epoch": 0, "reward_margin": m} for i, m in margins.items()])
    train = datasets.Dataset.from_dict({"id": list(margins), "source": ["x"] * 5, "is_flipped": [False, False, False, True, False]})
    sel = BetaFilter(dynamics_from=str(tmp_path)).select(SelectionContext(train))
    assert sel.kept.tolist() == [True, True, True, False, True] and sel.metadata["detection"]["is_flipped"]["auroc"] == 1.0


def test_dynamics_errors_name_the_stage(tmp_path):
    train = datasets.Dataset.from_dict({"id": ["a", "z"], "source": ["x", "x"]})
    with pytest.raises(UserError, match="selection.dynamics_from=None: forgetting reads the per-sample store of an earlier stage"):
        Forgetting().select(SelectionContext(train))
    with pytest.raises(UserError, match="has no per-sample records"):
        Forgetting(dynamics_from=str(tmp_path)).select(SelectionContext(train))
    write_store(tmp_path, [{"id": "a", "step": 0, "epoch": 0, "confidence": 0.9}])
    with pytest.raises(UserError, match="has no record for 1 of 2 training ids"):
        Forgetting(dynamics_from=str(tmp_path)).select(SelectionContext(train))
    assert Forgetting(dynamics_from=str(tmp_path), unseen="lowest", selector=Top(count=1)).select(SelectionContext(train)).kept.tolist() == [True, False]
    with pytest.raises(UserError, match="the store has no 'reward_margin'"):
        BetaFilter(dynamics_from=str(tmp_path)).select(SelectionContext(train))
