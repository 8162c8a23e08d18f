import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def test_lds_cli_smoke_writes_the_table_and_refuses_too_few_subsets(tmp_path, assay_cli):
    out = tmp_path / "lds"
    p = assay_cli(["lds", "--smoke", "--subsets", "4", "--train", "30", "--test", "6", "--epochs", "1",
                   "--methods", "random", "tracin", "grand", "--out", str(out)], tmp_path, command="assay.attribution.cli")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "lds.csv")
    assert list(df["method"]) == ["random", "tracin", "grand"]
    assert ((df["ci_low"] <= df["lds"]) & (df["lds"] <= df["ci_high"])).all()
    assert list(df["per_test_vector"]) == [True, True, False]
    assert (out / "lds.png").stat().st_size > 0
    p = assay_cli(["lds", "--subsets", "4", "--out", str(out)], tmp_path, command="assay.attribution.cli")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "--subsets" in p.stderr and "--smoke" in p.stderr


def test_lds_cli_ekfac_row(tmp_path, assay_cli):
    pytest.importorskip("kronfluence")
    out = tmp_path / "lds"
    p = assay_cli(["lds", "--smoke", "--subsets", "4", "--train", "30", "--test", "6", "--epochs", "1",
                   "--methods", "random", "ekfac", "--out", str(out)], tmp_path, command="assay.attribution.cli")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(out / "lds.csv")
    assert list(df["method"]) == ["random", "ekfac"]
    ek = df.set_index("method").loc["ekfac"]
    assert bool(ek["per_test_vector"]) and ek["ci_low"] <= ek["lds"] <= ek["ci_high"] and ek["s_per_train_example"] > 0
    assert not (tmp_path / "influence_results").exists()  # kronfluence's default folder: its files go to a temporary one
