"""A run's saved config.yaml rebuilds exactly the entries it ran with, nested entries included
(what collaborative deployments and later stages read back)."""

from __future__ import annotations

from omegaconf import OmegaConf

from assay.config import validate
from assay.registry import GROUPS, from_saved
from assay.run.dirs import job_config


def test_saved_config_rebuilds_every_entry(compose_cfg, tmp_path):
    cfg = compose_cfg([
        "objective=dr_dpo", "objective.aggregator.beta_prime=0.5", "objective/controller=beta_dpo", "objective.controller.keep=0.7",
        "data.format=preference", "selection=el2n", "selection/selector=anchor_quantile", "selection.selector.quantile=0.3",
        "selection.allow_untrained=true", "model.lora.r=4",
    ], tmp_path)
    spec = validate(cfg)
    OmegaConf.save(OmegaConf.create(job_config(cfg)), tmp_path / "config.yaml")  # as a run saves it
    saved = OmegaConf.load(tmp_path / "config.yaml")
    for group in GROUPS:
        assert from_saved(group, saved[group]) == getattr(spec, group), group
    assert from_saved("objective", saved.objective).aggregator.beta_prime == 0.5
    assert from_saved("selection", saved.selection).selector.quantile == 0.3
