"""The collab group composes and validates; bad input gets one line, exit 2, before any client starts."""

import pytest
from omegaconf import OmegaConf

import assay.config  # noqa: F401  (registers every schema)
from assay.collab.rules import COLLAB_RULES, rule_of
from assay.config import CollabConfig
from assay.errors import explain
from assay.registry import to_object

from tests.config.test_bad_input import assay_train, assert_one_line_error

SMALL = ["logger=none", "data.train_per_domain=20", "data.val_per_domain=4", "data.test_per_domain=4", "data.batch_size=4"]


@pytest.mark.parametrize("preset", ["clues3", "skills4"])
def test_presets_compose_and_validate(compose_cfg, preset):
    cfg = compose_cfg([f"collab={preset}", "selection=clues", "model.lora.r=8", "collab/aggregation=merge_linear"])
    collab = to_object(cfg.collab)
    assert isinstance(collab, CollabConfig) and collab.name == preset and rule_of(collab.aggregation).name == "merge_linear"
    assert rule_of(to_object(compose_cfg([f"collab={preset}"]).collab).aggregation).name == "fedavg"  # the presets' default rule
    assert len(collab.corruption) == len(collab.clients)
    # a single-site run has no collab node
    assert compose_cfg([]).collab is None


def test_every_collab_field_overrides(compose_cfg):
    cfg = compose_cfg(["collab=clues3", "collab.rounds=5", "collab.local_steps=2", "collab.fraction_train=0.5", "collab.partition_by=difficulty",
                       "collab.clients=[1,2]", "collab.corruption=[0.0,0.7]", "collab.warmup_rounds=0", "collab.oracle=true", "collab.local_schedule=cosine"])
    c = to_object(cfg.collab)
    assert (c.rounds, c.local_steps, c.fraction_train, c.partition_by, c.clients, c.corruption) == (5, 2, 0.5, "difficulty", ["1", "2"], [0.0, 0.7])
    assert OmegaConf.select(cfg, "collab.oracle") is True


@pytest.mark.parametrize("rule", sorted(COLLAB_RULES))
def test_every_rule_composes_with_only_its_own_fields(compose_cfg, rule):
    cfg = compose_cfg(["collab=skills4", "model.lora.r=8", f"collab/aggregation={rule}"])
    typed = rule_of(to_object(cfg.collab).aggregation)
    assert type(typed) is COLLAB_RULES[rule] and typed == COLLAB_RULES[rule]()
    if rule in ("ties", "ties_factors"):
        cfg = compose_cfg(["collab=skills4", f"collab/aggregation={rule}", "collab.aggregation.density=0.35"])
        assert rule_of(to_object(cfg.collab).aggregation).density == 0.35
    else:  # density is the TIES rules' field only
        with pytest.raises(Exception) as e:
            compose_cfg(["collab=skills4", f"collab/aggregation={rule}", "collab.aggregation.density=0.35"])
        assert explain(e.value).startswith("collab.aggregation.density: unknown key")


@pytest.mark.parametrize("old,new", [
    ("collab.mode=merge", "collab.mode: unknown key; it moved to collab/aggregation=<fedavg|local|merge_linear|ties|ties_factors|fedbiot>"),
    ("collab.mode=local", "collab.mode: unknown key; it moved to collab/aggregation="),
    ("collab.merge_method=ties", "collab.merge_method: unknown key; it moved to collab/aggregation=<merge_linear|ties|ties_factors>"),
    ("collab.density=0.2", "collab.density: unknown key; it moved to collab.aggregation.density"),
])
def test_old_collab_spellings_name_the_new_one(compose_cfg, old, new):
    with pytest.raises(Exception) as e:
        compose_cfg(["collab=clues3", old])
    line = explain(e.value)
    assert "\n" not in line and line.startswith(new), line


CASES = {
    "rounds=0": (["collab=clues3", "collab.rounds=0"], ["collab.rounds=0", "positive integer"]),
    "missing partition column": (["collab=clues3", "collab.partition_by=language"], ["collab.partition_by='language'", "not a column of the training data"]),
    "more clients than partitions": (["collab=clues3", "collab.clients=[]", "collab.corruption=[]", "collab.num_clients=9"], ["collab.num_clients=9", "more clients than partitions"]),
    "client with no data after partition": (["collab=clues3", "data.domains=[copy,reverse]"], ["collab.clients[2]='sort'", "client 2 has no training examples after partitioning"]),
    "merge without LoRA": (["collab=clues3", "collab/aggregation=ties_factors"], ["collab/aggregation='ties_factors'", "model.lora.r > 0"]),
    "TIES density out of range": (["collab=clues3", "model.lora.r=4", "collab/aggregation=ties", "collab.aggregation.density=0"], ["collab.aggregation.density=0.0", "(0, 1]"]),
    "anchor overlapping client data": (["collab=clues3", "selection=clues", "selection.selector.split=train"], ["selection.selector.split='train'", "overlaps client data"]),
    "corruption outside [0, 1)": (["collab=clues3", "collab.corruption=[0,0.2,1.0]"], ["collab.corruption[2]=1.0", "[0, 1)"]),
    "global noise on a collab run": (["collab=clues3", "noise=corrupt"], ["noise='corrupt'", "collab.corruption"]),
    "FedBiOT adapter leaving no layer for the emulator": (["collab=clues3", "model.num_layers=2", "collab/aggregation=fedbiot", "collab.aggregation.adapter_layers=2"],
                                                          ["collab.aggregation.adapter_layers=2", "the model has 2 decoder layers"]),
}


@pytest.mark.cli
@pytest.mark.parametrize("name", list(CASES))
def test_collab_bad_input(name, tmp_path):
    args, fragments = CASES[name]
    assert_one_line_error(assay_train([*SMALL, *args], tmp_path), *fragments)
