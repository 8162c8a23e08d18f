import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def test_lds_cli_smoke_writes_the_table_and_refuses_too_few_subsets(tmp_path, assay_cli):
    out = tmp_path / "lds"
    p = assay_cli(["lds", "--smoke", "--subsets", "4", "--train", "30", "--test", "6", "--epochs", "1",
                   "--methods", "random", "tracin", "grand", "--out", str(out)], tmp_path, command="assay.attribution.lds")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "lds.csv")
    assert list(df["method"]) == ["random", "tracin", "grand"]
    assert ((df["ci_low"] <= df["lds"]) & (df["lds"] <= df["ci_high"])).all()
    assert list(df["per_test_vector"]) == [True, True, False]
    assert (out / "lds.png").stat().st_size > 0
    p = assay_cli(["lds", "--subsets", "4", "--out", str(out)], tmp_path, command="assay.attribution.lds")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--subsets" in p.stderr and "--smoke" in p.stderr
