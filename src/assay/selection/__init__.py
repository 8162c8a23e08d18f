"""Selection (config group ``selection``): a scorer gives every training example a score, a selector
(``selection/selector``, :mod:`assay.selection.selectors`) keeps ids. The result (scores + kept mask,
keyed by id) is the run's selection artefact.

- ``base``: the scorer base class, its context and result, the fields scorers mix in
- ``baselines``: ``none`` and ``random``
- ``scorers``: the scoring methods, one module per family
- ``selectors``: how scores become kept ids
- ``detection``: how well a selection finds the injected noise
- ``rescoring``: re-selection during training
"""

from assay.selection.base import ModelSource, Scorer, Selection, SelectionContext, TargetSet
from assay.selection.detection import FLAGS, auroc, detection_report
from assay.selection.selectors import finite, quota_mask, top_k_mask

__all__ = ["FLAGS", "ModelSource", "Scorer", "Selection", "SelectionContext", "TargetSet", "auroc", "detection_report", "finite", "quota_mask", "top_k_mask"]
