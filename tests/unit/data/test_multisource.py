"""``data=sources``: several loaders, one pool, stable ids, one format; bad sources named."""

import json
from pathlib import Path

import pandas as pd
import pytest

from assay.data.multisource import SourcesData
from assay.errors import UserError


def write_sources(tmp: Path) -> dict:
    """Three local files of different schemas: plain JSON-lines with other column names, Alpaca
    JSON-lines, and Parquet with its own ids."""
    qa = tmp / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"what is {i}", "answer": f"{i}"}) + "\n" for i in range(40)))
    inst = tmp / "inst.jsonl"
    inst.write_text("".join(json.dumps({"instruction": f"say {i}", "input": "" if i % 2 else "loud", "output": f"{i}!"}) + "\n" for i in range(30)))
    pq = tmp / "pq.parquet"
    pd.DataFrame({"id": [f"r{i}" for i in range(25)], "prompt": [f"p{i}" for i in range(25)], "completion": [f"c{i}" for i in range(25)]}).to_parquet(pq)
    return {
        "qa": {"kind": "jsonl", "train_file": str(qa), "columns": {"prompt": "question", "completion": "answer"}},
        "inst": {"kind": "jsonl", "train_file": str(inst), "schema": "alpaca", "weight": 2.0},
        "pq": {"kind": "parquet", "train_file": str(pq)},
    }


def test_three_schemas_one_pool(tmp_path):
    data = SourcesData(sources=write_sources(tmp_path), seed=0)
    splits = data.load()
    train = splits["train"]
    assert sorted(set(train["source"])) == ["inst", "pq", "qa"]
    assert set(train.column_names) >= {"id", "source", "prompt", "completion", "answer", "difficulty"}
    assert all(i.startswith(f"{s}/") for i, s in zip(train["id"], train["source"]))
    for split in ("train", "val", "test"):
        ids = splits[split]["id"]
        assert len(ids) == len(set(ids))
    assert "pq/r0" in set(splits["train"]["id"]) | set(splits["val"]["id"]) | set(splits["test"]["id"])
    assert data.domain_weights() == {"qa": 1.0, "inst": 2.0, "pq": 1.0}


def test_ids_do_not_change_when_a_source_is_added_or_removed(tmp_path):
    sources = write_sources(tmp_path)
    both = SourcesData(sources=sources, seed=0).load()
    alone = SourcesData(sources={"qa": sources["qa"]}, seed=0).load()
    qa_ids = {s: [i for i, d in zip(both[s]["id"], both[s]["source"]) if d == "qa"] for s in ("train", "val", "test")}
    assert {s: list(alone[s]["id"]) for s in qa_ids} == qa_ids


def test_skills_source_ids_are_prefixed_by_domain():
    train = SourcesData(sources={"sk": {"kind": "skills", "domains": ["copy"], "train_per_domain": 10, "val_per_domain": 2, "test_per_domain": 2}}, seed=0).load()["train"]
    assert train["id"][0] == "sk/copy/train/00000" and set(train["source"]) == {"sk"}


@pytest.mark.parametrize("sources,field,fragment", [
    ({}, "data.sources", "name at least one source"),
    ({"a": {"kind": "csv"}}, "data.sources.a.kind", "must be one of"),
    ({"a/b": {"kind": "skills"}}, "data.sources.a/b", "no '/'"),
    ({"a": {"kind": "skills", "format": "preference"}}, "data.sources.a.format", "every source shares the run's format data.format=sft"),
    ({"a": {"kind": "skills", "colour": 1}}, "data.sources.a.colour", "unknown key for a skills source"),
    ({"a": {"kind": "skills", "weight": -1}}, "data.sources.a.weight", ">= 0"),
    ({"a": {"kind": "skills", "max_length": 9}}, "data.sources.a.max_length", "run-level field"),
    ({"a": {"kind": "jsonl"}}, "data.sources.a.train_file", "is required"),
    ({"a": {"kind": "skills", "domains": ["juggle"]}}, "data.sources.a.domains", "each domain must be one of"),
    ({"a": {"kind": "jsonl", "train_file": "x.jsonl", "source_column": "d"}}, "data.sources.a.source_column", "its key in data.sources"),
])
def test_bad_sources_are_named(sources, field, fragment):
    with pytest.raises(UserError) as e:
        SourcesData(sources=sources, seed=0)
    assert str(e.value).startswith(field) and fragment in str(e.value)


def test_unloadable_source_is_named(tmp_path):
    data = SourcesData(sources={"ok": {"kind": "skills"}, "broken": {"kind": "jsonl", "train_file": str(tmp_path / "missing.jsonl")}}, seed=0)
    with pytest.raises(UserError, match=r"^data\.sources\.broken\.train_file=.*does not exist"):
        data.load()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match=r"^data\.sources\.bad\.train_file=.*(unreadable|could not be loaded|is not valid JSON)"):
        SourcesData(sources={"bad": {"kind": "jsonl", "train_file": str(bad)}}, seed=0).load()


def test_alpaca_source_in_a_preference_run_is_one_clear_error(tmp_path):
    sources = write_sources(tmp_path)
    with pytest.raises(UserError, match=r"^data\.sources\.inst"):
        SourcesData(sources={"inst": sources["inst"]}, format="preference", seed=0).load()


def test_two_command_line_sources_with_one_domain_name_are_refused():
    from assay.data.multisource import check_duplicate_domains

    check_duplicate_domains(["+data.sources.a={kind:skills}", "+data.sources.b={kind:skills}", "data.sources.a.weight=2"])
    with pytest.raises(UserError, match=r"^data.sources.a=.*two sources with the same domain name 'a'"):
        check_duplicate_domains(["+data.sources.a={kind:skills}", "+data.sources.a={kind:jsonl,train_file:x}"])
