"""Rewrite values.json from the golden cases (``python -m tests.golden.record``)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import tests.conftest  # noqa: F401  (offline environment before anything loads a model)
from tests.conftest import run_in_hydra
from tests.golden.cases import SELECT_ONLY, SELECTION, TRAINING, FAST, VALUES, selection_values, training_values


def main() -> None:
    values: dict = {"training": {}, "selection": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in TRAINING.items():
            run_dir = Path(tmp) / name
            values["training"][name] = training_values(run_dir, run_in_hydra([*FAST, *overrides], run_dir))
            print(name, values["training"][name], flush=True)
        for name, overrides in SELECTION.items():
            run_dir = Path(tmp) / name
            run_in_hydra([*SELECT_ONLY, *overrides], run_dir)
            values["selection"][name] = selection_values(run_dir)
            print(name, values["selection"][name], flush=True)
    VALUES.write_text(json.dumps(values, indent=1) + "\n")


if __name__ == "__main__":
    main()
