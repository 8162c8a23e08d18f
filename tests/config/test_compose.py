"""Every option of every group, and every experiment and debug overlay, composes and validates."""

from pathlib import Path

import pytest

from assay.catalog import NESTED, group_options, groups
from assay.config import GROUPS, validate
from assay.errors import UserError
from assay.paths import CONF_DIR
from assay.registry import options, yaml_options

# Options that need a value the user must give, or that only make sense with another choice.
COMPANIONS = {
    ("model", "hf"): ["model.name_or_path=some-org/some-model"],  # a local path must exist (checked at validation)
    ("ordering", "folding"): ["ordering.score_from=difficulty"],  # its default, the selection scores, is constant under selection=none
    **{("selection", s): ["selection.allow_untrained=true"] for s in ("perplexity", "el2n", "ifd", "grand", "clues", "less", "lqs", "forward_inf", "nice", "cluster_less")},
    ("data", "hf_sft"): ["data.path=/some/local/dataset"],
    ("data", "hf_preference"): ["data.path=/some/local/dataset", "objective=dpo"],
    ("data", "jsonl"): ["data.train_file=/some/train.jsonl"],
    ("mixture", "weights"): ["mixture.weights={copy:1,add:3}"],
    ("mixture", "schedule"): ["mixture.upsample=[add]"],
    ("mixture", "doremi"): ["mixture.reference=/some/reference/run"],
    ("mixture", "doremi_resample"): ["mixture.reference=/some/reference/run"],
    ("data", "sources"): ["+data.sources.skills={kind:skills}"],
    ("data", "parquet"): ["data.train_file=/some/train.parquet"],
    ("noise", "pairwise_flip"): ["objective=dpo", "data.format=preference"],
    ("noise", "gap_flip"): ["objective=dpo", "data.format=preference"],
    # every objective trains on the data format it declares
    **{("objective", key): [f"data.format={cls().data_format}"] for key, cls in options("objective").items() if cls().data_format != "sft"},
}


PRESETS = {("objective", "dr_dpo"): "dpo+dr_dpo", ("objective", "beta_dpo"): "dpo+beta_dpo"}
"""Options that are another option plus a nested choice, by the method label they compose to."""
COMPANIONS.update({("objective", preset): [f"data.format={options('objective')['dpo']().data_format}"] for _, preset in PRESETS})


def all_options():
    for group in GROUPS:
        for option in group_options(group):
            yield group, option


@pytest.mark.parametrize("group,option", list(all_options()))
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    spec = validate(cfg)
    entry = getattr(spec, group)
    # the entry that will be built is the one asked for; a preset (objective=dr_dpo) is its method
    assert entry.name == option or getattr(entry, "method", None) == PRESETS.get((group, option))


@pytest.mark.parametrize("group,option", [(g, o) for g in NESTED for o in group_options(g)])
def test_every_nested_option_composes_and_validates(compose_cfg, group, option):
    parent, child = group.split("/")
    base = {"objective": ["objective=dpo", "data.format=preference"], "selection": ["selection=random"]}[parent]
    companions = {("selection/selector", "threshold"): ["selection.selector.threshold=0.5"]}.get((group, option), [])
    entry = getattr(validate(compose_cfg([*base, f"{group}={option}", *companions])), parent)
    assert getattr(entry, child).name == option


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    validate(cfg)
    for stage in cfg.stages:  # each stage of a recipe must itself be a valid run
        validate(compose_cfg([f"experiment={experiment}", *stage.overrides, "stages=[]"]))


@pytest.mark.parametrize("overlay", ["debug=fast", "hydra/launcher=local", "hydra/launcher=slurm", "hydra/launcher=slurm_ddp", "hydra/launcher=slurm_ddp_local", "paths=default"])
def test_overlays_compose(compose_cfg, overlay):
    validate(compose_cfg([overlay]))


def test_catalog_lists_every_option_with_a_description():
    """``assay-list`` shows every registered entry (with or without a YAML file) and every YAML."""
    for group in groups():
        opts = group_options(group)
        assert set(opts) == set(yaml_options(group)) | set(options(group))
        assert all(text for text in opts.values()), (group, opts)


def test_an_option_without_a_yaml_is_its_dataclass_and_a_yaml_wins_where_it_exists(compose_cfg):
    """A registered option composes from the ConfigStore when it has no YAML file; where
    ``conf/<group>/<key>.yaml`` exists, its values are the ones composed."""
    assert not (CONF_DIR / "trainer" / "cpu.yaml").exists()
    assert compose_cfg(["trainer=cpu"]).trainer.name == "cpu"
    import dataclasses

    import yaml

    checked = 0
    for group in GROUPS:
        for key in set(yaml_options(group)) & set(options(group)):
            text = yaml.safe_load((CONF_DIR / group / f"{key}.yaml").read_text()) or {}
            values = {k: v for k, v in text.items() if k != "defaults" and isinstance(v, (int, float, str, bool)) and v != "???"}
            if not values:
                continue
            composed = getattr(compose_cfg([f"{group}={key}", *COMPANIONS.get((group, key), [])]), group)
            defaults = {f.name: f.default for f in dataclasses.fields(options(group)[key])}
            for field, value in values.items():
                assert composed[field] == value and value != defaults.get(field), (group, key, field)
                checked += 1
    assert checked > 0


def test_a_yaml_precedes_the_stored_option_of_the_same_name(tmp_path):
    """A file config of the same name as a stored option (here from an added search path) wins."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "cpu.yaml").write_text("defaults:\n  - cpu_schema\n  - _self_\nmax_steps: 7\n")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            plain = compose(config_name="train", overrides=["trainer=cpu"])
            cfg = compose(config_name="train", overrides=["trainer=cpu", f"hydra.searchpath=[file://{tmp_path}]"])
    finally:
        GlobalHydra.instance().clear()
    assert plain.trainer.max_steps != 7 and cfg.trainer.max_steps == 7


def test_yaml_holds_only_what_differs_from_the_dataclass():
    """Defaults live in the dataclass: a YAML value equal to the schema default (a plain default or
    a ``default_factory``'s value) is noise."""
    import dataclasses

    import yaml

    for group in GROUPS:
        for key, cls in options(group).items():
            file = CONF_DIR / group / f"{key}.yaml"
            if not file.is_file():
                continue
            text = yaml.safe_load(file.read_text()) or {}
            fields = {f.name: f for f in dataclasses.fields(cls)}
            for field, value in text.items():
                if field == "defaults" or value == "???" or field not in fields:
                    continue
                f = fields[field]
                if f.default is not dataclasses.MISSING:
                    schema_default = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    schema_default = f.default_factory()
                else:
                    continue
                assert value != schema_default, f"{group}/{key}.yaml repeats the default {field}={value!r}"


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml")))
def test_every_sweep_composes(compose_cfg, sweep):
    validate(compose_cfg([f"sweep={sweep}", *(["model.init_from=null"] if sweep == "noisy_prefs" else [])]))


@pytest.mark.parametrize(
    "override,field_name",
    [
        ("trainer.threads=0", "trainer.threads"),
        ("objective=dpo data.format=preference objective.pack_factor=-1", "objective.pack_factor"),
        ("objective=sft objective.pack_factor=-1", "objective.pack_factor"),
        ("selection=less selection.projection=gaussian", "selection.projection"),
        ("selection=gotd selection.fit_size=-5", "selection.fit_size"),
        ("selection=random selection/selector=quota selection.selector.clusters=0", "selection.selector.clusters"),
        ("selection=random selection/selector=threshold", "selection.selector.threshold"),
        ("selection=forgetting selection.correct_by=argmax", "selection.correct_by"),
        ("dynamics=gradients dynamics.proj_dim=-1", "dynamics.proj_dim"),
        ("dynamics=gradients dynamics.batch_size=0", "dynamics.batch_size"),
        ("dynamics=gradients dynamics.grad_steps=[0,5]", "dynamics.grad_steps"),
        ("dynamics=gradients dynamics.grad_every_n_steps=-2", "dynamics.grad_every_n_steps"),
    ],
)
def test_new_fields_refuse_bad_values_in_one_line(compose_cfg, override, field_name):
    from assay.errors import UserError

    with pytest.raises(UserError) as err:
        validate(compose_cfg(override.split()))
    assert str(err.value).startswith(field_name) and "\n" not in str(err.value)


def test_each_scorer_preset_picks_its_selector(compose_cfg):
    picks = {"clues": "anchor_quantile", "none": "all", "less": "top", "random": "top", "lava": "top"}
    for scorer, selector in picks.items():
        assert compose_cfg([f"selection={scorer}"]).selection.selector.name == selector
    cfg = compose_cfg(["selection=el2n", "selection/selector=anchor_quantile", "selection.selector.quantile=0.3"])
    assert (cfg.selection.selector.name, cfg.selection.selector.quantile) == ("anchor_quantile", 0.3)


@pytest.mark.parametrize(
    "override,message",
    [
        ("selection.selector.threshold=0.3", "selection.selector.threshold: unknown key; Top has ['count', 'fraction', 'name']"),
        ("selection.fraction=0.5", "selection.fraction: unknown key; it moved to selection.selector.fraction"),
        ("selection.keep_rule=quota", "selection.keep_rule: unknown key; it moved to selection/selector=<all|top|threshold|anchor_quantile|quota>"),
    ],
)
def test_a_field_the_chosen_selector_does_not_read_is_refused(compose_cfg, override, message):
    from assay.errors import explain

    with pytest.raises(Exception) as err:
        compose_cfg(["selection=random", override])
    assert explain(err.value) == message


def test_rescore_every_must_not_be_negative(compose_cfg):
    with pytest.raises(UserError, match="selection.rescore_every"):
        validate(compose_cfg(["selection=el2n", "selection.rescore_every=-1"]))


@pytest.mark.parametrize("overrides,lr,batch,steps", [
    (["model=smollm2_135m"], 2e-5, 16, 500),                                  # all weights: oumi's rate for this model
    (["model=smollm2_135m", "model.lora.r=8"], 2e-4, 16, 500),                # adapters: ten times that
    (["model=smollm2_135m", "optim.lr=3e-5", "data.batch_size=4"], 3e-5, 4, 500),  # the command line wins
    (["model=smollm2_135m", "debug=fast"], 2e-5, 8, 4),                       # and so do overlays
    (["model=tiny_llama"], 1e-3, 64, 2500),                                   # no preset defaults: the schema's
])
def test_a_model_preset_brings_training_defaults_that_fit_its_size(compose_cfg, overrides, lr, batch, steps):
    spec = validate(compose_cfg(overrides))
    assert (spec.optim.lr, spec.data.batch_size, spec.trainer.max_steps) == (lr, batch, steps)


@pytest.mark.parametrize("overrides,steps,epochs", [
    ([], 2500, -1),                                                           # neither: the documented default
    (["trainer.max_epochs=3"], None, 3),                                      # epochs alone: no step default caps them
    (["model=smollm2_135m", "trainer.max_epochs=3"], None, 3),                # not the preset's either
    (["trainer.max_epochs=3", "trainer.max_steps=40"], 40, 3),                # both: whichever comes first
])
def test_a_run_length_in_epochs_is_one_setting(compose_cfg, overrides, steps, epochs):
    spec = validate(compose_cfg(overrides))
    assert (spec.trainer.max_steps, spec.trainer.max_epochs) == (steps, epochs)
    if steps is None:  # set once the selected rows are known: 3 epochs of ceil(1000 // 2 / 64) = 8 batches a rank
        trainer = spec.trainer.for_rows(1000, 64, 2)
        assert trainer.max_steps == 3 * 8 and spec.trainer.for_rows(1000, 64, 1).max_steps == 3 * 16
        accumulating = validate(compose_cfg([*overrides, "trainer.accumulate_grad_batches=3"])).trainer.for_rows(1000, 64, 1)
        assert accumulating.max_steps == 3 * 6  # 16 batches: 5 full steps and the epoch's last partial one


def test_a_drawn_mixture_has_no_epochs_to_count(compose_cfg):
    with pytest.raises(UserError, match="trainer.max_epochs=2.*no epochs; set trainer.max_steps"):
        validate(compose_cfg(["mixture=schedule", "mixture.upsample=[add]", "trainer.max_epochs=2"]))
