"""Bad rows in the user's own data files, and settings that silently did nothing: one ``error:`` line
(file, column, row, the value found and what is allowed), exit 2, no traceback, nothing printed before
it. Each case used to end in a traceback, a wrong message (an integer called "empty", an empty Parquet
file called "unreadable"), a library's ``[ERROR]`` line ahead of ours, or a sweep whose bad file was
found only after the jobs before it had trained."""

from pathlib import Path

import pytest

from tests.config.test_bad_files import FAST, assay_train, assert_no_summary, assert_one_line_error, jsonl, rows


def _with(index: int, **values) -> list[dict]:
    out = rows(40)
    out[index] = {**out[index], **values}
    return out


def _parquet(path: Path, columns: dict) -> Path:
    import pandas as pd

    pd.DataFrame(columns).to_parquet(path)
    return path


def _only_our_line(proc, *fragments: str) -> str:
    line = assert_one_line_error(proc, *fragments)
    assert proc.stderr.strip() == line, proc.stderr[-3000:]  # nothing before it (no library [ERROR] line)
    return line


@pytest.mark.parametrize(
    "row, fragments",
    [
        (_with(5, completion=7), ["column 'completion' must be text", "row 5 (line 6)", "int 7"]),
        (_with(5, completion=0), ["column 'completion' must be text", "row 5 (line 6)", "int 0"]),  # not "an empty completion"
        (_with(6, prompt=None), ["column 'prompt' must be text", "row 6 (line 7)", "null"]),
        (_with(7, prompt=["a", "b"]), ["column 'prompt' must be text", "row 7 (line 8)", "list ['a', 'b']"]),
    ],
    ids=["int_completion", "zero_completion", "null_prompt", "list_prompt"],
)
@pytest.mark.cli
def test_jsonl_text_field_of_the_wrong_type(tmp_path, row, fragments):
    f = jsonl(tmp_path / "sft.jsonl", row)
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={f}"], tmp_path)
    line = _only_our_line(proc, "data.train_file", "sft.jsonl", *fragments)
    assert "empty" not in line
    assert_no_summary(tmp_path)


@pytest.mark.parametrize(
    "columns, fragments",
    [
        ({"prompt": [f"q {i}" for i in range(40)], "completion": list(range(40))}, ["column 'completion' must be text", "row 0", "int 0", "int64"]),
        ({"prompt": [None if i == 6 else f"q {i}" for i in range(40)], "completion": [f"a {i}" for i in range(40)]}, ["column 'prompt' must be text", "row 6", "null"]),
        ({"prompt": [[f"q {i}"] for i in range(40)], "completion": [f"a {i}" for i in range(40)]}, ["column 'prompt' must be text", "row 0", "list ['q 0']"]),
    ],
    ids=["int_completion", "null_prompt", "list_prompt"],
)
@pytest.mark.cli
def test_parquet_text_column_of_the_wrong_type(tmp_path, columns, fragments):
    f = _parquet(tmp_path / "sft.parquet", columns)
    proc = assay_train([*FAST, "data=parquet", f"data.train_file={f}"], tmp_path)
    line = _only_our_line(proc, "data.train_file", "sft.parquet", *fragments)
    assert "empty" not in line


@pytest.mark.cli
def test_parquet_file_with_the_columns_and_no_rows(tmp_path):
    import pandas as pd

    f = _parquet(tmp_path / "none.parquet", {"prompt": pd.Series([], dtype=str), "completion": pd.Series([], dtype=str)})
    proc = assay_train([*FAST, "data=parquet", f"data.train_file={f}"], tmp_path)
    line = _only_our_line(proc, "data.train_file", "none.parquet", "file has no rows")
    assert "unreadable" not in line


def _broken(path: Path) -> Path:
    good = "".join(f'{{"prompt": "q {i}", "completion": "a {i}"}}\n' for i in range(40))
    path.write_text(good[:200] + '\n{"prompt": "x", "completion\n' + good[200:])
    return path


@pytest.mark.cli
def test_malformed_jsonl_line_is_named_without_a_library_error_line(tmp_path):
    f = _broken(tmp_path / "broken.jsonl")
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={f}"], tmp_path)
    _only_our_line(proc, "data.train_file", "broken.jsonl", "is not valid JSON", "line ")


@pytest.mark.cli
def test_malformed_file_read_by_datasets_prints_no_library_error_line(tmp_path):
    """A file that ``datasets`` reads itself (a Hub builder with data_files): its ``[ERROR]`` log line
    stays off the console, and the reader's own reason replaces "An error occurred"."""
    f = _broken(tmp_path / "broken.jsonl")
    proc = assay_train([*FAST, "data=hf_sft", "data.path=json", f"data.data_files={{train:{f}}}", "data.schema=plain"], tmp_path)
    line = _only_our_line(proc, "data.path", "is unreadable")
    assert "[ERROR]" not in proc.stderr + proc.stdout and "An error occurred" not in line


@pytest.mark.cli
@pytest.mark.parametrize("kind", ["wrong_type", "malformed", "no_rows"])
def test_bad_rows_in_a_later_sweep_job_stop_the_sweep_before_it_starts(tmp_path, kind):
    import pandas as pd

    if kind == "no_rows":
        good = _parquet(tmp_path / "good.parquet", {"prompt": [f"q {i}" for i in range(40)], "completion": [f"a {i}" for i in range(40)]})
        bad = _parquet(tmp_path / "bad.parquet", {"prompt": pd.Series([], dtype=str), "completion": pd.Series([], dtype=str)})
        data, why = "data=parquet", "file has no rows"
    else:
        good = jsonl(tmp_path / "good.jsonl", rows(40))
        bad = jsonl(tmp_path / "bad.jsonl", _with(5, completion=7)) if kind == "wrong_type" else _broken(tmp_path / "bad.jsonl")
        data, why = "data=jsonl", "must be text" if kind == "wrong_type" else "is not valid JSON"
    proc = assay_train(["-m", *FAST, data, f"data.train_file={good},{bad}"], tmp_path)
    _only_our_line(proc, f"data.train_file='{bad}'", why, "in the job with overrides")
    assert not (tmp_path / "logs").exists()  # no job started, not even the good one


@pytest.mark.cli
def test_text_rows_of_a_source_in_data_sources_are_checked_before_any_job(tmp_path):
    bad = jsonl(tmp_path / "bad.jsonl", _with(3, prompt=None))
    proc = assay_train([*FAST, "data=sources", f"+data.sources.code={{kind:jsonl,train_file:{bad}}}"], tmp_path)
    _only_our_line(proc, "data.sources.code.train_file", "column 'prompt' must be text", "row 3 (line 4)", "null")
    assert not (tmp_path / "logs").exists()


@pytest.mark.cli
def test_valid_files_with_whole_text_still_train(tmp_path):
    """The checks let ordinary files through: JSON-lines with blank lines and extra non-text columns,
    Parquet with string columns, both with an empty prompt (allowed)."""
    import pandas as pd

    f = tmp_path / "ok.jsonl"
    f.write_text(jsonl(tmp_path / "tmp.jsonl", _with(0, prompt="") + rows(2, score=1.5)).read_text() + "\n\n")
    p = _parquet(tmp_path / "ok.parquet", {"prompt": [""] + [f"q {i}" for i in range(39)], "completion": [f"a {i}" for i in range(40)], "n": list(range(40))})
    for data, path in (("data=jsonl", f), ("data=parquet", p)):
        proc = assay_train([*FAST, data, f"data.train_file={path}", "eval.per_source_metrics=[loss,exact_match]"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "error:" not in proc.stderr


def test_table_too_small_for_a_held_out_fit_counts_its_rows(tmp_path):
    """A 2-row table used to be called "the table has 1" (the rows left after holding one out)."""
    from assay.errors import UserError
    from assay.mixsearch.fit import fit_report
    from assay.mixsearch.table import load_table

    table_path = _parquet(tmp_path / "t.parquet", {"w/a": [0.5, 0.2], "w/b": [0.5, 0.8], "loss": [1.0, 2.0]})
    table = load_table(table_path, target="loss")
    with pytest.raises(UserError) as e:
        fit_report(table, ["linear"], echo=lambda s: None)
    assert "the table has 2" in str(e.value) and "1 held out" in str(e.value), str(e.value)


@pytest.mark.cli
def test_a_chat_role_no_template_knows_is_one_line(tmp_path):
    chat = [{"messages": [{"role": "narrator" if i == 3 else "user", "content": f"q {i}"}, {"role": "assistant", "content": f"a {i}"}]} for i in range(12)]
    bad = jsonl(tmp_path / "chat.jsonl", chat)
    proc = assay_train([*FAST, "data=jsonl", f"data.train_file={bad}", "data.schema=messages"], tmp_path)
    _only_our_line(proc, "role 'narrator' is not one of the chat roles")
