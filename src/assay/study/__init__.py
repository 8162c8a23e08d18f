"""Studies as specs: ``study.yaml`` (arms, seeds, a primary metric, the declared comparisons), a
runner that launches them through Hydra multirun and a report with corrected statistics."""

from assay.study.report import report
from assay.study.runner import run, states
from assay.study.spec import StudySpec, check_overrides, load

__all__ = ["StudySpec", "check_overrides", "load", "report", "run", "states"]
