"""Cluster-LESS (as DataFlex defines it): k-means clusters, a few representatives' gradients per cluster, the
cluster's mean cosine with the target gradients shared by its members."""

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from assay.selection import SelectionContext
from assay.selection.scorers.cluster_less import ClusterLESS, cluster_scores, n_clusters, representatives


def test_cluster_scores_by_hand():
    # clusters {0, 1} and {2, 3, 4}; representatives 0 | 2, 3. Normalised gradients: g0 = (0.6, 0.8);
    # g2 = (1, 0), g3 = (0, 1) average to (0.5, 0.5), normalised (1/√2, 1/√2). Targets (1, 0) and (0, 5) normalise
    # to e1, e2: cluster 0 scores (0.6 + 0.8)/2 = 0.7, cluster 1 (1/√2 + 1/√2)/2 = 1/√2.
    labels = np.array([0, 0, 1, 1, 1])
    got = cluster_scores(labels, np.array([0, 2, 3]), torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 0.0], [0.0, 5.0]]))
    np.testing.assert_allclose(got, [0.7, 0.7, 2 ** -0.5, 2 ** -0.5, 2 ** -0.5], atol=1e-6)


def test_cluster_count_and_representatives():
    assert n_clusters(130, 64) == 3 and n_clusters(5, 64) == 1 and n_clusters(3, 1) == 3
    labels = np.array([0, 1, 0, 1, 1, 2, 0, 0])
    reps = representatives(labels, 2, seed=0)
    # two per cluster (one in cluster 2, which has one member), cluster by cluster, members only
    assert len(reps) == 5 and len(set(reps.tolist())) == 5
    assert labels[reps].tolist() == [0, 0, 1, 1, 2]
    assert reps.tolist() == representatives(labels, 2, seed=0).tolist()


class Tok:
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2


def rows(prompts, completions, prefix):
    return datasets.Dataset.from_dict({
        "id": [f"{prefix}{i}" for i in range(len(prompts))], "source": ["x"] * len(prompts), "prompt": ["p"] * len(prompts),
        "completion": ["c"] * len(prompts), "prompt_ids": prompts, "completion_ids": completions,
    })


def test_score_end_to_end_against_per_example_gradients():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         num_key_value_heads=2, max_position_embeddings=64))
    train = rows([[1, 4], [1, 7, 7], [1, 3], [1, 9], [1, 5, 5]], [[5, 6, 2], [9, 9, 2], [8, 2], [4, 2], [6, 2]], "p")
    target = rows([[1, 4], [1, 3, 3]], [[5, 6, 2], [8, 2]], "t")
    ctx = SelectionContext(train, splits=datasets.DatasetDict({"train": train, "val": target}), model=model, tokenizer=Tok)
    scorer = ClusterLESS(proj_dim=0, cluster_size=2, samples_per_cluster=1, allow_untrained=True, seed=0)
    got = scorer.score(ctx)
    labels = scorer.clusters(ctx)
    reps = representatives(labels, 1, scorer.seed)
    assert scorer.cost == {"clusters": 3, "representatives": 3} and len(set(labels.tolist())) == 3
    # with one representative per cluster, each member's score is LESS's cosine score of its representative
    g = scorer.features(model, train, 0)
    less = (F.normalize(g, dim=1) @ F.normalize(scorer.features(model, target, 0), dim=1).T).mean(1).numpy()
    rep_of = {int(labels[r]): int(r) for r in reps}
    np.testing.assert_allclose(got, [less[rep_of[int(c)]] for c in labels], atol=1e-5)


def test_config_and_bad_values(compose_cfg):
    from assay.config import validate
    from assay.errors import explain

    spec = validate(compose_cfg(["selection=cluster_less", "selection.allow_untrained=true"]))
    assert isinstance(spec.selection, ClusterLESS) and spec.selection.proj_dim == 4096 and spec.selection.cluster_size == 64
    for override, name in (("selection.cluster_size=0", "selection.cluster_size"), ("selection.samples_per_cluster=0", "selection.samples_per_cluster")):
        with pytest.raises(Exception) as err:
            validate(compose_cfg(["selection=cluster_less", override]))
        line = explain(err.value)
        assert "\n" not in line and name in line, line
