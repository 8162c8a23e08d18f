"""``<stage>:<override>`` on the command line: each stage of a recipe takes its own overrides (its own
data files) without Hydra quoting (assay.run.stages)."""

import pytest
from omegaconf import OmegaConf

from assay.errors import UserError
from assay.run.stages import stage_entries, stage_overrides, stage_prefixed_args


def test_prefixed_overrides_become_one_stage_args_entry_per_stage():
    argv = ["experiment=sft_then_dpo", "sft:data=jsonl", "dpo:data.train_file=my prefs's.jsonl", "sft:data.train_file=chat.jsonl",
            "optim.lr=1e-4", "model.init_from=C:/models/x"]
    out = stage_prefixed_args(argv)
    assert out[:3] == ["experiment=sft_then_dpo", "optim.lr=1e-4", "model.init_from=C:/models/x"]  # a colon after '=' is a value
    assert out[3:] == ["++stage_args.sft=['data=jsonl','data.train_file=chat.jsonl']",
                       "++stage_args.dpo=['data.train_file=my prefs\\'s.jsonl']"]
    assert stage_prefixed_args(["hydra/launcher=local", "+x=1"]) == ["hydra/launcher=local", "+x=1"]


def test_a_stage_gets_its_own_overrides_after_the_recipe_and_the_command_line():
    cfg = OmegaConf.create({"stages": [{"name": "sft", "overrides": ["objective=sft"]},
                                       {"name": "dpo", "overrides": ["objective=dpo"], "init_from_previous": True}],
                            "stage_args": {"dpo": ["data=jsonl", "data.train_file=p.jsonl"]}})
    sft, dpo = stage_entries(cfg)
    assert sft["args"] == [] and dpo["args"] == ["data=jsonl", "data.train_file=p.jsonl"]
    assert stage_overrides(dpo, ["seed=3"], "/runs/x/sft") == [
        "objective=dpo", "seed=3", "data=jsonl", "data.train_file=p.jsonl", "stage=dpo", "stages=[]",
        "previous_stage=/runs/x/sft", "model.init_from=/runs/x/sft"]


@pytest.mark.parametrize("stages, match", [
    ([{"name": "sft", "overrides": []}], "is not a stage of this recipe; its stages: \\['sft'\\]"),
    ([], "this run has no stages"),
])
def test_a_prefix_naming_no_stage_is_refused(stages, match):
    with pytest.raises(UserError, match=match):
        stage_entries(OmegaConf.create({"stages": stages, "stage_args": {"dpo": ["optim.lr=1"]}}))
