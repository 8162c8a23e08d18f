"""The provenance tests' method cards: what ``assay-provenance card`` and docs/methods.md show."""


from __future__ import annotations

from typing import ClassVar

from assay.cards import MethodCard

PAPER = "Kuditipudi, Huang, Zhu, Yang, Potts & Liang 2025, Blackbox Model Provenance via Palimpsestic Membership Inference"
CODE = "RohithKuditipudi/blackbox-model-tracing@238b35a"


class QueryTest:
    """Spearman's ρ between our training step and the suspect's (reference-corrected) log-likelihood of each example."""

    card: ClassVar[MethodCard] = MethodCard(
        paper=PAPER,
        arxiv="2510.19796",
        code=f"{CODE}: tracing/query/statistics.py (BasicStatistic), tracing/query/metrics.py (pplx), tracing/test.py, "
             "scripts/query/run_query_test.py, scripts/query/tinystories_basic.py",
        defaults={
            "reference": "optional (the paper's Eq. 2 subtracts a reference model's log-perplexity): follows",
            "permutations": "999 Monte Carlo permutations beside scipy's p (the script prints scipy's spearmanr p only)",
        },
        deviations=(
            "A positive ρ is the evidence (ρ_S(t, loglik_suspect − loglik_reference)); the authors' script correlates the order "
            "with log-perplexity differences, where the evidence is negative: the same statistic, sign flipped.",
            "The p-value reported first is one-sided (ρ > 0, the direction palimpsestic memorisation predicts); scipy's two-sided "
            "p (the authors') is reported beside it.",
            "Each example's log-likelihood is over the tokens our run trained on (the response given the prompt), not the whole "
            "sequence with BOS (their default pplx): the prompt tokens carry no trace of our order.",
            "An example's step is the last step that trained it (--position first: the first); the authors' transcripts are one epoch.",
        ),
        checked="tests/unit/tracing/test_provenance_statistics.py: the permutation null against scipy; tests/integration/test_provenance.py: a "
                "fine-tune of our run's model is detected at small p, models trained on the same data in other shuffles are not",
        notes="Cost: one forward pass per transcript example under the suspect (and the reference).",
    )

    reference = None
    permutations = 999


class ObservePartition:
    """Spearman's ρ between step and the matches of the suspect text's n-grams in the examples trained at that step."""

    card: ClassVar[MethodCard] = MethodCard(
        paper=PAPER,
        arxiv="2510.19796",
        code=f"{CODE}: scripts/observation/partition.py, tracing/index.py (NGramIndex.match_ngrams_to_steps), "
             "tracing/observation/metrics.py (spearman_matches), tracing/observation/statistics.py (the shuffled null)",
        defaults={"k": "8 tokens (partition.py --k 8): follows"},
        deviations=(
            "partition.py does not run as stored (match_ngrams_to_steps called without self, get_training_steps used as a number, "
            "matched_texts_to_steps undefined); re-implemented from it.",
            "n-grams of 2..k tokens (the index code's lookup takes n + 1 tokens for n = k..1); an in-memory index over our "
            "examples (prompt + response tokens) instead of infini-gram, no 10 ms lookup timeout; a matched n-gram credits every "
            "example containing it once.",
            "Only the steps that trained some example count, and the p-value is the permutation p of the authors' null (the "
            "example → step map re-permuted); scipy's p (what spearman_matches returns) is reported as p_value_scipy: steps "
            "hold unequal numbers of examples, so the counts are not exchangeable across steps.",
        ),
        checked="tests/unit/tracing/test_provenance_statistics.py: the n-gram matches by hand, hits on late examples give a positive ρ "
                "and a small p; tests/integration/test_provenance.py: a text of our run's last-trained examples",
        notes="Needs several hundred thousand tokens of text for power at the paper's scale; cheap (no model).",
    )

    k = 8
    permutations = 999


class ObserveReshuffle:
    """The real order's rank among m retrains of our last phase in fresh shuffles, scored by the text's log-likelihood."""

    card: ClassVar[MethodCard] = MethodCard(
        paper=PAPER,
        arxiv="2510.19796",
        code=f"{CODE}: scripts/observation/tinystories.py (run_shuffling, run_testing, experiment_metric), tracing/llm.py",
        defaults={
            "shuffles": "9 (tinystories.py --num_shuffles 10 with the real order as the tenth): follows",
            "prompt_tokens": "0: a line 'prompt<TAB>sample' scores the sample given its prompt, as the authors score 32 sampled "
                             "tokens after a 20-token prompt; a line without a tab is scored after its first token",
        },
        deviations=(
            "p is the exact rank p (1 + #{s_j >= s_0})/(m + 1); the authors report the z-score against the shuffles (also "
            "reported).",
            "The phase starts at a kept checkpoint of our run (weights and AdamW state) and is retrained with the run's objective, "
            "schedule and clipping; no fine-tune on the text first (their finetune_on_test).",
        ),
        checked="tests/unit/tracing/test_provenance_statistics.py: the rank p by hand; tests/integration/test_provenance.py: at toy "
                "scale (4 shuffles of a 25-step phase) the real order ranks first on a text of the last-trained examples; its cost",
        notes="Cost: (m + 1) retrains of the last phase; at toy scale seconds each. SFT runs without LoRA only.",
    )

    shuffles = 9
    prompt_tokens = 0


TESTS = {"query": QueryTest, "observe_partition": ObservePartition, "observe_reshuffle": ObserveReshuffle}
"""The provenance tests and their cards (listed by ``assay-list`` under ``provenance/test``)."""
