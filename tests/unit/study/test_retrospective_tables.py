"""The README's studies table quotes experiments/retrospective/results.md: recomputing it from the
committed per-run rows gives the committed file, byte for byte."""

import importlib.util
import re

from tests.conftest import REPO


def test_retrospective_results_are_what_the_script_computes(tmp_path):
    spec = importlib.util.spec_from_file_location("holm", REPO / "experiments" / "retrospective" / "holm.py")
    holm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(holm)
    holm.main(tmp_path / "results.md")
    # the commit that committed each rows file comes from git history, which a shallow clone lacks
    same = lambda text: re.sub(r"committed at [0-9a-f]+|committed at uncommitted", "committed at <commit>", text)  # noqa: E731
    assert same((tmp_path / "results.md").read_text()) == same((REPO / "experiments" / "retrospective" / "results.md").read_text())
