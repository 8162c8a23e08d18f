"""GOT-D: gradients of optimal transport for data selection (Kang, Just, Sun, Jahagirdar, Zhang, Du,
Sahu, Jia; "Get More for Less: Principled Data Selection for Warming Up Fine-Tuning in LLMs",
ICLR 2024, arXiv 2405.02774; code REDSgnaoh/DV4LLM).

Pre-fine-tuning on a selected set moves the model's effective distribution from the pre-training
distribution D_P (stood in for by the candidate pool) toward a mixture of D_P and the selection. The
examples that bring that mixture closest to the target are those whose added mass *decreases*
OT(pool, target) the most: the most negative calibrated gradients g_i(1 + 1/N) − mean(g). Unlike
matching the target distribution, this favours target-like examples that the pool under-represents.
The candidate side can be millions of points, so the default solver is the batched log-domain
Sinkhorn (cost blocks, memory O(batch·M)), as the paper's ott-jax ``PointCloud(batch_size=2000)``;
beyond ``fit_size`` candidates the potentials are fitted on a seeded subsample and extended to every
candidate by the entropic c-transform in one streamed pass (``assay.ot``), so the cost grows
linearly in the pool instead of sweeps × pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from assay.registry import register
from assay.selection import SelectionContext
from assay.selection.scorers.ot import OTSelection


@register("selection", "gotd")
@dataclass
class GotD(OTSelection):
    """GOT-D (Kang et al. 2024): keep the candidates whose added mass moves the pool toward the target most."""

    name: str = "gotd"
    solver: str = "batched"
    budget: ClassVar[float] = 0.2

    def score(self, ctx: SelectionContext) -> np.ndarray:
        x, y, _ = self.embed(ctx)
        result = self.solve(x, y)
        self.save_values(ctx, result)
        # The calibrated gradient g_i(1 + 1/N) − mean(g) of the paper differs from LAVA's
        # f_i − Σ_{j≠i} f_j/(N−1) by a positive factor and a constant: the same ranking.
        return -result.values
