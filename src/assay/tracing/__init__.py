"""Model provenance by palimpsestic membership inference (Kuditipudi, Huang, Zhu, Yang, Potts & Liang
2025, arXiv 2510.19796): ``assay-provenance`` (:mod:`assay.tracing.cli`). Not to be confused with
:mod:`assay.provenance`, which records where a run came from (commit, versions, machine).

- ``transcript``: our run's training examples with the step that trained each;
- ``statistics``: the test statistics and their exact p-values (pure numbers);
- ``query``: the query test (a suspect model); ``observe``: the text-only tests.

The tests' method cards are below (``assay-provenance card``, and docs/methods.md under ``provenance``).
"""

from assay.tracing.methods import QueryTest, ObservePartition, ObserveReshuffle

__all__ = ["QueryTest", "ObservePartition", "ObserveReshuffle"]
