"""FASTTRACK fact tracing (arXiv 2404.15157): the scores, the index, the oracle ceiling, the corpus's
ground truth and ``assay-attribution fasttrack``."""

from __future__ import annotations

import numpy as np
import pytest

from assay.errors import UserError
from assay.tracing.facts import RELATIONS, generate_facts
from assay.tracing.fasttrack import (FunctionValidator, Index, OracleValidator, cluster_labels, prf, recursive_kmeans, top_k,
                                     trace)


def test_precision_recall_f1_by_hand():
    # returned {1, 2, 3, 4}, truth {3, 4, 5}: tp = 2, P = 2/4, R = 2/3, F1 = 2·(1/2)(2/3)/(1/2 + 2/3) = 4/7
    p, r, f1 = prf([1, 2, 3, 4], [3, 4, 5])
    assert (p, r) == (0.5, pytest.approx(2 / 3))
    assert f1 == pytest.approx(4 / 7)
    assert prf([], [3]) == (0.0, 0.0, 0.0)  # nothing returned: precision 0 by convention
    assert prf([3], [3]) == (1.0, 1.0, 1.0)
    with pytest.raises(UserError, match="at least one supporting"):
        prf([1], [])


def test_top_k_breaks_ties_by_index():
    assert top_k(np.array([0.1, 0.9, 0.9, 0.5]), 3).tolist() == [1, 2, 3]


@pytest.mark.parametrize("threshold", [7, 30, 100])
def test_recursive_kmeans_leaves_are_a_partition_bounded_by_the_threshold(threshold):
    x = np.random.default_rng(0).normal(size=(250, 4))
    leaves = recursive_kmeans(x, threshold, seed=0)
    sizes = [len(c) for c in leaves]
    assert max(sizes) <= threshold and min(sizes) >= 1
    assert sorted(np.concatenate(leaves).tolist()) == list(range(250))
    if threshold >= 250:
        assert len(leaves) == 1


def test_recursive_kmeans_splits_identical_rows_by_chunks():
    leaves = recursive_kmeans(np.ones((50, 3)), threshold=10, seed=0)
    assert sorted(len(c) for c in leaves) == [10] * 5


def test_labels_and_fuzzy_matching_pick_the_cluster_of_the_query():
    texts = ["Zorblat plays the violin.", "The violin of Zorblat is old.", "Zorblat tunes a violin daily.",
             "A garden lies by the river.", "The river floods the garden.", "Children play in the garden.",
             "The market opens at dawn.", "Bread is sold at the market.", "The market closes late."]
    clusters = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9)]
    labels = cluster_labels(texts, clusters, terms=2)
    assert set(labels[0]) == {"zorblat", "violin"}
    index = Index(clusters, labels)
    # "Zorblatt" is misspelt (difflib ratio 14/15 with "zorblat"), "musician" matches nothing
    assert index.match("Zorblatt is a musician.", cutoff=0.85, max_clusters=3) == [0]
    assert index.match("Where is the market garden?", max_clusters=1) in ([1], [2])
    assert index.match("Nothing relevant here.") == []
    assert index.candidates("Zorblatt is a musician.").tolist() == [0, 1, 2]


def test_oracle_validator_recall_is_the_retrieval_ceiling():
    from sklearn.feature_extraction.text import TfidfVectorizer

    c = generate_facts(n_facts=12, fillers=150, seed=3)
    x = TfidfVectorizer().fit_transform(c.texts).toarray()
    index = Index.build(c.texts, x, threshold=20, seed=0)
    oracle = OracleValidator(c.triples)
    ceilings = []
    for fact in c.facts:
        got = trace(index, c.texts, fact.query(), fact.triple, oracle, max_clusters=2)
        truth = c.truth(fact)
        ceiling = len(set(got.candidates.tolist()) & truth) / len(truth)
        p, r, _ = prf(got.returned, truth)
        assert r == ceiling
        assert p == (1.0 if len(got.returned) else 0.0)
        ceilings.append(ceiling)
    assert 0 < np.mean(ceilings)
    # a validator that accepts everything returns exactly the candidates
    fact = c.facts[0]
    everything = trace(index, c.texts, fact.query(), fact.triple, FunctionValidator(lambda claim, s: True), max_clusters=2)
    assert everything.returned.tolist() == everything.candidates.tolist()


def test_the_corpus_ground_truth_is_the_sentences_that_state_the_fact():
    c = generate_facts(n_facts=12, paraphrases=3, conflict_rate=0.5, other_relation=2, fillers=40, seed=1)
    assert len(c) == 12 * 3 + 12 * 2 + c.kinds.count("conflict") + 40
    assert c.kinds.count("filler") == 40 and c.kinds.count("other_relation") == 24
    for fact in c.facts:
        truth = c.truth(fact)
        assert len(truth) == 3
        # a sentence may open with the object, capitalised
        assert all(fact.subject in c.texts[i] and fact.object.lower() in c.texts[i].lower() for i in truth)
        assert len({c.texts[i] for i in truth}) == 3  # three distinct templates
        assert fact.query() not in c.texts
        for i, t in enumerate(c.triples):
            if t is not None and t[0] == fact.subject and i not in truth:
                assert c.kinds[i] in ("other_relation", "conflict")
                assert t[1] != fact.relation or t[2] != fact.object
    conflicts = [i for i, k in enumerate(c.kinds) if k == "conflict"]
    assert conflicts
    for i in conflicts:  # same subject and relation as a query fact, another object
        fact = next(f for f in c.facts if f.subject == c.triples[i][0])
        assert c.triples[i][1] == fact.relation and c.triples[i][2] != fact.object
    assert generate_facts(n_facts=12, paraphrases=3, conflict_rate=0.5, other_relation=2, fillers=40, seed=1).texts == c.texts
    assert {f.relation for f in c.facts} == set(RELATIONS)


def test_generator_refuses_no_facts_and_too_many_paraphrases():
    with pytest.raises(UserError, match="at least one planted fact"):
        generate_facts(n_facts=0)
    with pytest.raises(UserError, match="between 1 and 5"):
        generate_facts(paraphrases=6)


def _cli(tmp_path, monkeypatch, *args):
    from assay.attribution import fasttrack_cli
    from assay.attribution.cli import main

    # a stand-in for SmolLM2: says Yes when the sentence names the claim's first word (the subject's first name)
    monkeypatch.setitem(fasttrack_cli.VALIDATORS, "smollm2",
                        lambda corpus, a: FunctionValidator(lambda claim, s: claim.split()[0] in s, name="standin"))
    return main(["fasttrack", "--facts", "3", "--fillers", "40", "--embedder", "tfidf", "--threshold", "10", "--out", str(tmp_path), *args])


def test_cli_smoke_with_a_stand_in_validator(tmp_path, monkeypatch, capsys):
    import pandas as pd

    assert _cli(tmp_path, monkeypatch, "--seeds", "0", "1", "--baselines", "embed", "bm25") == 0
    df = pd.read_csv(tmp_path / "fasttrack.csv")
    assert len(df) == 2 * 3 * 4  # seeds x facts x (standin, oracle, embed, bm25)
    assert set(df["method"]) == {"fasttrack_standin", "fasttrack_oracle", "embed", "bm25"}
    oracle = df[df["method"] == "fasttrack_oracle"]
    assert (oracle["recall"] == oracle["candidate_recall"]).all()
    assert (df.loc[df["method"] == "embed", "k"] == 4).all()  # k = the truth's size, 4 paraphrases
    assert (tmp_path / "fasttrack.png").is_file()
    out = capsys.readouterr().out
    assert "fasttrack_standin" in out and "Declared comparisons" in out


@pytest.mark.parametrize("args, fragment", [
    (["--facts", "0"], "--facts=0: need at least one planted fact"),
    (["--k", "100000", "--baselines", "bm25"], "integer from 1 to the corpus size"),
    (["--validators", "oracle", "gpt"], "validators are"),
    (["--validators", "oracle", "--embedder", "minilm", "--minilm-path", "/nonexistent/minilm"], "no all-MiniLM-L6-v2 weights"),
])
def test_cli_bad_input_is_one_line(tmp_path, monkeypatch, capsys, args, fragment):
    assert _cli(tmp_path, monkeypatch, *args) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_cli_missing_smollm2_weights_is_one_line(tmp_path, capsys):
    from assay.attribution.cli import main

    assert main(["fasttrack", "--embedder", "tfidf", "--smollm2-gguf", "/nonexistent/smol.gguf", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no SmolLM2-135M-Instruct GGUF there" in err and len(err.splitlines()) == 1
