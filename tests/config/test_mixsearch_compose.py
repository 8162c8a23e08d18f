"""The files mixture search writes compose as they are: proxy configs and proposed mixture options."""

from __future__ import annotations

import numpy as np
import pytest

from assay.config import validate
from assay.mixsearch.mixture import MixtureSpec
from assay.mixsearch.propose import ProposalResult, write_proposal
from assay.mixsearch.swarm import Proxy, Swarm

DOMAINS = ["add", "copy", "count", "reverse", "sort"]


def test_proxy_config_composes_with_its_own_run_overrides(tmp_path, compose_cfg):
    spec = MixtureSpec(extra={"mixture.num_examples": 400})
    swarm = Swarm(tmp_path, DOMAINS, [Proxy("p000", {"add": 0.7, "sort": 0.3}, {"trainer.max_steps": 7, "seed": 3})], spec,
                  overrides=["trainer.max_steps=100", "seed=0", "data.batch_size=8"]).write()
    cmd = swarm.command(["p000"])
    # the proxy's own steps and seed win: the common overrides that would clobber them are dropped
    assert "trainer.max_steps=100" not in cmd and "seed=0" not in cmd and "data.batch_size=8" in cmd
    assert "+proxy=p000" in cmd and "hydra.sweep.subdir=${hydra:runtime.choices.proxy}" in cmd
    cfg = compose_cfg([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+proxy=p000", "data.batch_size=8"])
    spec_ = validate(cfg)
    assert spec_.trainer.max_steps == 7 and cfg.seed == 3
    assert spec_.mixture.name == "weights" and spec_.mixture.num_examples == 400
    assert spec_.mixture.proportions({d: 100 for d in DOMAINS}) == pytest.approx({"add": 0.7, "copy": 0, "count": 0, "reverse": 0, "sort": 0.3})


def test_proposal_is_a_mixture_option_and_an_overrides_file(tmp_path, compose_cfg):
    res = ProposalResult(np.array([0.1, 0.2, 0.3, 0.0, 0.4]), 1.23, "simulation")
    paths = write_proposal(tmp_path, "best", res, DOMAINS, MixtureSpec())
    cfg = compose_cfg([f"hydra.searchpath=[file://{paths['conf']}]", "mixture=best"])
    mix = validate(cfg).mixture
    assert mix.proportions({d: 100 for d in DOMAINS}) == pytest.approx(dict(zip(DOMAINS, [0.1, 0.2, 0.3, 0.0, 0.4])))
    args = (tmp_path / "best.overrides").read_text().split()
    assert args[0] == "mixture=weights"
    cfg2 = compose_cfg(args)
    assert validate(cfg2).mixture.proportions({d: 100 for d in DOMAINS}) == pytest.approx(mix.proportions({d: 100 for d in DOMAINS}))
