"""LAVA: learning-agnostic data valuation (Just, Kang, Wang, Zeng, Ko, Jin, Jia; ICLR 2023,
arXiv 2305.00054; reference code ruoxi-jia-group/LAVA).

The utility proxy is the class-wise Wasserstein distance between the training set and a clean
validation set over (x, y) pairs, with ground cost d((x,a),(x',b)) = λ_x·‖φ(x) − φ(x')‖²/2 + λ_y·W(a, b),
where W(a, b) is the OT distance between the class-conditional feature distributions (OTDD). Each
point's value is the calibrated gradient of that distance w.r.t. its mass (see ``assay.ot``):
higher = more harmful. "Class" is a column of the data (``source`` by default: the skill / domain);
with ``label_column=null`` the cost is the feature cost alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from assay.errors import check
from assay.ot import Labels
from assay.registry import register
from assay.selection import SelectionContext
from assay.selection.scorers.ot import OTSelection


@register("selection", "lava")
@dataclass
class Lava(OTSelection):
    """LAVA (Just et al. 2023): class-wise OT to the trusted validation set; drop the highest calibrated gradients."""

    name: str = "lava"
    label_column: Optional[str] = "source"
    """The class y of each example (a column of train and target); null = feature cost only."""
    lambda_x: float = 1.0
    """Weight λ_x of the feature cost (LAVA default 1)."""
    lambda_y: float = 1.0
    """Weight λ_y of the label (class-distribution) cost (LAVA default 1)."""
    label_max_points: int = 500
    """Examples per class (each side) in the class-to-class OT distances."""
    balance_classes: bool = True
    """Give each target class the pool's share of that class (LAVA: uniform target weights). With a
    small trusted set whose class shares differ from the pool's, uniform weights make over-represented
    classes look harmful as a whole; balancing keeps the ranking about quality within each class."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.lambda_x >= 0, "selection.lambda_x", self.lambda_x, "must be >= 0")
        check(self.lambda_y >= 0, "selection.lambda_y", self.lambda_y, "must be >= 0")
        check(self.lambda_x + self.lambda_y > 0, "selection.lambda_x", self.lambda_x, "λ_x and λ_y cannot both be 0")
        check(self.label_max_points > 0, "selection.label_max_points", self.label_max_points, "must be a positive integer")

    def score(self, ctx: SelectionContext) -> np.ndarray:
        x, y, target = self.embed(ctx)
        labels = None
        if self.label_column is not None:
            for split, ds in (("train", ctx.train), (self.target_split, target)):
                check(self.label_column in ds.column_names, "selection.label_column", self.label_column, f"not a column of the {split} split; columns are {ds.column_names}")
            labels = Labels(
                np.asarray(ctx.train[self.label_column]), np.asarray(target[self.label_column]),
                lambda_y=self.lambda_y, max_points=self.label_max_points, balance=self.balance_classes,
            )
        result = self.solve(x, y, labels, label_column=self.label_column or "label", lambda_x=self.lambda_x)
        self.save_values(ctx, result)
        return -result.values  # keep score: higher = keep, so the negative of "higher = more harmful"
