"""The golden values still hold: per-step losses of SFT and the DPO family, and what each selector keeps."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_in_hydra
from tests.golden.cases import FAST, SELECT_ONLY, SELECTION, TRAINING, VALUES, selection_values, training_values

pytestmark = pytest.mark.integration
GOLDEN = json.loads(VALUES.read_text())


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_losses_match_the_golden_values(name, tmp_path):
    got = training_values(tmp_path, run_in_hydra([*FAST, *TRAINING[name]], tmp_path))
    want = GOLDEN["training"][name]
    assert got["step"] == want["step"]
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5, abs=1e-6)
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(SELECTION))
def test_selection_matches_the_golden_values(name, tmp_path):
    run_in_hydra([*SELECT_ONLY, *SELECTION[name]], tmp_path)
    got, want = selection_values(tmp_path), GOLDEN["selection"][name]
    assert (got["pool"], got["kept"], got["kept_ids_sha1"]) == (want["pool"], want["kept"], want["kept_ids_sha1"])
    assert got["score_abs_sum"] == pytest.approx(want["score_abs_sum"], rel=1e-5)
