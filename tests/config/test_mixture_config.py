"""Every new mixture / data option composes and validates; bad mixture input is one line, exit 2."""

import pytest

from assay.config import validate
from tests.config.test_bad_input import FAST, assay_train, assert_one_line_error

COMPOSES = [
    ["data=sources", "+data.sources.sk={kind:skills,domains:[copy,add]}", "+data.sources.web={kind:jsonl,train_file:/x.jsonl,columns:{prompt:q,completion:a}}", "data.sources.web.weight=2"],
    ["data=sources", "+data.sources.hub={kind:hub,path:tatsu-lab/alpaca,schema:alpaca}", "+data.sources.pq={kind:parquet,train_file:/x.parquet}"],
    ["data=parquet", "data.train_file=/x.parquet"],
    ["mixture=weights", "mixture.weights={copy:1,add:3}", "mixture.unit=tokens", "mixture.num_tokens=10000", "mixture.max_epochs={add:4}"],
    ["mixture=temperature", "mixture.temperature=3", "mixture.unit=tokens", "mixture.max_repetition=15"],
    ["mixture=single", "mixture.max_epochs={copy:2}"],
    ["mixture=schedule", "mixture.upsample=[add,sort]", "mixture.last_fraction=0.1", "mixture.factor=4"],
    ["mixture=schedule", "mixture.stages=[{until:0.8,weights:{copy:1}},{until:1.0}]"],
    ["mixture=doremi", "mixture.reference=/r", "mixture.eta=0.5", "mixture.smoothing=1e-4", "mixture.init=natural", "mixture.update_every=5"],
    ["mixture=odm", "mixture.smoothing=0.9", "mixture.reward_scale=15", "mixture.warmup_steps=100", "mixture.init=temperature", "mixture.init_temperature=3"],
    ["mixture=skill_it", "mixture.graph=[[1,0.5,0,0,0],[0,1,0,0,0],[0,0,1,0,0],[0,0,0,1,0],[0,0,0,0,1]]", "mixture.window=2", "mixture.graph_estimate=identity"],
    ["mixture=skill_it", "mixture.graph_estimate=gradient_probe"],
    ["mixture=skill_it", "mixture.graph_steps=5"],
    ["mixture=odm", "mixture.init=weights", "mixture.init_weights={copy:1,add:2}"],
    ["experiment=online_mixing"],
    ["experiment=online_mixing", "mixture=skill_it"],
]


@pytest.mark.parametrize("overrides", COMPOSES, ids=lambda o: " ".join(o)[:60])
def test_new_options_compose_and_validate(compose_cfg, overrides):
    spec = validate(compose_cfg(overrides))
    assert spec.mixture.name and spec.data.name


def test_command_line_weight_of_a_source(compose_cfg):
    spec = validate(compose_cfg(["experiment=online_mixing", "data.sources.add.weight=3"]))
    assert spec.data.domain_weights()["add"] == 3.0


CASES = {
    "weights naming an unknown domain": (["mixture=weights", "mixture.weights={copy:1,juggle:1}"], ["mixture.weights='juggle'", "is not a domain", "copy"]),
    "per-domain cap on an unknown domain": (["mixture.max_epochs={juggle:2}"], ["mixture.max_epochs='juggle'", "is not a domain"]),
    "all-zero schedule weights": (["mixture=schedule", "mixture.stages=[{until:1.0,weights:{copy:0}}]"], ["mixture.stages[0].weights", "at least one weight"]),
    "schedule not covering the run": (["mixture=schedule", "mixture.stages=[{until:0.5,weights:{copy:1}}]"], ["mixture.stages[0].until=0.5", "up to 0.5 only"]),
    "source of another format": (["data=sources", "+data.sources.sk={kind:skills,format:preference}"], ["data.sources.sk.format='preference'", "data.format=sft"]),
    "duplicate domain names": (["data=sources", "+data.sources.sk={kind:skills}", "+data.sources.sk={kind:skills}"], ["data.sources.sk"]),
    "unloadable source": (["data=sources", "+data.sources.sk={kind:skills}", "+data.sources.web={kind:jsonl,train_file:/nope.jsonl}"], ["data.sources.web.train_file='/nope.jsonl'", "does not exist"]),
    "Skill-it's probe flag, now graph_estimate": (["mixture=skill_it", "mixture.probe=false"], ["mixture.probe", "moved to mixture.graph_estimate"]),
    "end-of-training upsampling as an ordering, now the schedule mixture": (["ordering=upsample_end", "ordering.sources=[add]"], ["ordering='upsample_end'", "was removed", "mixture=schedule mixture.upsample="]),
    "Skill-it graph estimate unknown": (["mixture=skill_it", "mixture.graph_estimate=brute"], ["mixture.graph_estimate='brute'", "training", "gradient_probe"]),
    "DoReMi reference that is no run": (["mixture=doremi", "mixture.reference=/tmp"], ["mixture.reference='/tmp'", "finished assay run directory"]),
    "drawn mixture over its cap": (["mixture=schedule", "mixture.upsample=[add]", "mixture.factor=20", "mixture.max_repetition=1", "trainer.max_steps=40"], ["mixture.max_repetition=1.0", "domain 'add' would be drawn", "epochs", "x its cap"]),
    "token mixture needing more repetition than the cap": (["mixture=weights", "mixture.weights={copy:1,add:1}", "mixture.unit=tokens", "mixture.num_tokens=100000"], ["mixture.num_tokens=100000", "domain", "epochs", "x its cap"]),
}


@pytest.mark.cli
@pytest.mark.parametrize("name", list(CASES))
def test_mixture_errors(name, tmp_path):
    args, fragments = CASES[name]
    assert_one_line_error(assay_train([*FAST, *args], tmp_path), *fragments)


def test_weights_from_a_file_refuses_what_holds_no_weights(tmp_path):
    import json

    from assay.data.mixture import WeightsMixture
    from assay.errors import UserError

    with pytest.raises(UserError, match="give the weights or mixture.weights_from"):
        WeightsMixture(weights={"copy": 1.0}, weights_from=str(tmp_path))
    with pytest.raises(UserError, match="has no weights"):
        WeightsMixture(weights_from=str(tmp_path)).read_weights()
    (tmp_path / "mixing.json").write_text(json.dumps({"updates": 3}))
    with pytest.raises(UserError, match="neither 'average_weights'"):
        WeightsMixture(weights_from=str(tmp_path)).read_weights()
    (tmp_path / "mixing.json").write_text(json.dumps({"average_weights": {"copy": 0.25, "add": 0.75}}))
    assert WeightsMixture(weights_from=str(tmp_path)).proportions({"copy": 10, "add": 5, "sort": 1}) == {"copy": 0.25, "add": 0.75, "sort": 0.0}
    (tmp_path / "p.json").write_text(json.dumps({"name": "best", "weights": {"copy": 1, "add": 3}}))
    assert WeightsMixture(weights_from=str(tmp_path / "p.json")).read_weights() == {"copy": 1.0, "add": 3.0}
