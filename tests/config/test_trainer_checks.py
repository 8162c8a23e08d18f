"""Trainer profiles against the machine: strategy installed, accelerator present, devices available,
precision supported, and what sharded strategies cannot do with the rest of the run. One line each,
before any work starts."""

import importlib.util

import pytest
import torch
from test_bad_input import FAST, assay_train, assert_one_line_error

from assay.catalog import group_options
from assay.config import validate
from assay.errors import UserError
from assay.run.machine import Machine, check_trainer, launcher_machine, this_machine

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
HAS_CUDA = torch.cuda.is_available()


def expected_refusal(spec) -> str | None:
    """What this machine must say about a trainer profile, worked out independently of check_trainer."""
    t = spec.trainer
    if t.strategy.startswith("deepspeed") and not HAS_DEEPSPEED:
        return "deepspeed is not installed; pip install 'assay[deepspeed]'"
    if t.accelerator in ("gpu", "cuda") and not HAS_CUDA:
        return "trainer.accelerator='gpu': no CUDA GPU on this machine"
    return None


@pytest.mark.parametrize("option", sorted(group_options("trainer")))
def test_every_trainer_profile_runs_here_or_is_refused_in_one_line(compose_cfg, option):
    spec = validate(compose_cfg([f"trainer={option}"]))  # every profile composes and validates anywhere
    refusal = expected_refusal(spec)
    if refusal is None:
        check_trainer(spec)
        return
    with pytest.raises(UserError) as err:
        check_trainer(spec)
    assert refusal in str(err.value) and "\n" not in str(err.value)


def test_this_cpu_machine_refuses_gpu_profiles(compose_cfg):
    if HAS_CUDA:
        pytest.skip("a GPU is present")
    for option in ("gpu", "ddp", "fsdp"):
        with pytest.raises(UserError, match=r"^trainer.accelerator='gpu': no CUDA GPU on this machine .*use trainer=cpu$"):
            check_trainer(validate(compose_cfg([f"trainer={option}"])))


GPU1 = Machine("a 1-GPU node", gpus=1, cpus=8, bf16=True)


@pytest.mark.parametrize(
    "overrides,machine,fragments",
    [
        (["trainer=gpu", "trainer.devices=2"], GPU1, ["trainer.devices=2", "has 1 GPU(s); use at most 1"]),
        (["trainer=ddp", "trainer.devices=[0,2]"], GPU1, ["trainer.devices=[0, 2]", "[2] do not exist"]),
        (["trainer=cpu", "trainer.devices=9"], Machine("a node", 0, 8), ["trainer.devices=9", "8 CPU core(s)"]),
        (["trainer=gpu"], Machine("an old GPU node", 1, 8, bf16=False), ["trainer.precision='bf16-mixed'", "does not support bfloat16"]),
        (["trainer=gpu", "trainer.precision=transformer-engine"], GPU1, ["trainer.precision='transformer-engine'", "not installed"]),
        (["trainer=gpu"], Machine("the SLURM job (hydra.launcher.gpus_per_node=0)", 0, 4, local=False), ["gpus_per_node=0", "gets no GPU"]),
        (["objective.pack_factor=0", "model.attn_implementation=flash_attention_2"], this_machine(), ["model.attn_implementation='flash_attention_2'", "use sdpa"]),
    ],
)
def test_machine_checks_refuse_in_one_line(compose_cfg, overrides, machine, fragments):
    spec = validate(compose_cfg(overrides))
    with pytest.raises(UserError) as err:
        check_trainer(spec, machine)
    text = str(err.value)
    assert "\n" not in text and all(f in text for f in fragments), text


def test_machine_checks_accept_what_fits(compose_cfg):
    check_trainer(validate(compose_cfg(["trainer=ddp", "trainer.devices=2"])), Machine("a 2-GPU node", 2, 8, bf16=True))
    check_trainer(validate(compose_cfg(["trainer=gpu"])), Machine("the SLURM job (hydra.launcher.gpus_per_node=1)", 1, 4, local=False))
    # Dr. DPO's global scope with several processes is what it is for
    check_trainer(validate(compose_cfg(["objective=dpo", "data.format=preference", "objective/aggregator=dr_dpo",
                                        "objective.aggregator.scope=global", "trainer=ddp", "trainer.devices=2"])), Machine("a 2-GPU node", 2, 8, bf16=True))
    check_trainer(validate(compose_cfg(["trainer=cpu", "trainer.precision=bf16-mixed"])), this_machine())


def test_slurm_sweeps_are_checked_against_the_requested_nodes(compose_cfg):
    launcher = compose_cfg(["hydra/launcher=slurm"]).hydra.launcher
    machine = launcher_machine(launcher)
    assert not machine.local and machine.gpus == int(launcher.get("gpus_per_node") or 0)
    assert launcher_machine(None).where == "this machine"


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["trainer=fsdp", "dynamics=gradients"], ["trainer.strategy='fsdp'", "dynamics=gradients", "whole on every rank"]),
        (["trainer=fsdp", "selection=less", "selection.allow_untrained=true"], ["trainer.strategy='fsdp'", "selection=less"]),
        (["trainer=deepspeed_zero3", "selection=grand", "selection.allow_untrained=true"], ["trainer.strategy='deepspeed_stage_3'", "selection=grand"]),
        (["trainer=deepspeed_zero3", "selection=lqs", "selection.allow_untrained=true"], ["selection=lqs"]),
        (["trainer=deepspeed_zero2", "dynamics=gradients", "dynamics.adam=true"], ["dynamics.adam=True", "flattened shards"]),
        (["trainer=fsdp", "trainer.accelerator=cpu"], ["trainer.strategy='fsdp'", "CUDA GPUs only", "trainer=ddp"]),
        (["trainer=fsdp", "trainer.sharding_strategy=ZERO3"], ["trainer.sharding_strategy='ZERO3'", "FULL_SHARD"]),
        (["trainer.strategy=horovod"], ["trainer.strategy='horovod'", "must be one of"]),
        (["trainer.accelerator=npu"], ["trainer.accelerator='npu'", "must be one of"]),
        (["trainer.precision=8-true"], ["trainer.precision='8-true'", "bf16-mixed"]),
        (["trainer.precision=16-mixed"], ["trainer.precision='16-mixed'", "not supported on the CPU"]),
        (["trainer.devices=0"], ["trainer.devices=0", "positive count"]),
        (["model.attn_implementation=flash"], ["model.attn_implementation='flash'", "sdpa"]),
        (["objective=dpo", "data.format=preference", "model.attn_implementation=flash_attention_2"], ["model.attn_implementation='flash_attention_2'", "share_prompt=false"]),
        (["model.attn_implementation=flash_attention_2"], ["model.attn_implementation='flash_attention_2'", "objective.pack_factor=0"]),
    ],
)
def test_config_refusals_are_one_line(compose_cfg, overrides, fragments):
    with pytest.raises(UserError) as err:
        validate(compose_cfg(overrides))
    text = str(err.value)
    assert "\n" not in text and all(f in text for f in fragments), text


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=deepspeed_zero2", "dynamics=gradients"],  # ZeRO-2 keeps whole parameters on every rank
        ["trainer=fsdp", "trainer.sharding_strategy=NO_SHARD", "dynamics=gradients"],
        ["trainer=fsdp", "dynamics=losses", "selection=el2n", "selection.allow_untrained=true"],  # no per-sample gradients
        ["objective=dpo", "data.format=preference", "objective.share_prompt=false", "model.attn_implementation=flash_attention_2"],
        ["objective.pack_factor=0", "model.attn_implementation=flash_attention_2"],
    ],
)
def test_what_sharding_allows_still_validates(compose_cfg, overrides):
    validate(compose_cfg(overrides))


# ---- the command line: one line, exit 2, before any work (each case starts a process) ------------
@pytest.mark.parametrize(
    "args,fragments",
    [
        (["trainer=gpu"], ["trainer.accelerator='gpu'", "no CUDA GPU", "trainer=cpu"]),
        (["trainer=deepspeed_zero3"], ["deepspeed is not installed; pip install 'assay[deepspeed]'"]),
        # every job of a sweep is checked before the first one starts
        (["-m", "trainer.devices=1,64"], ["trainer.devices=64", "use at most", "trainer.devices=64"]),
    ],
)
@pytest.mark.cli
def test_trainer_errors_on_the_command_line(args, fragments, tmp_path):
    if HAS_CUDA or HAS_DEEPSPEED:
        pytest.skip("this machine can run these profiles")
    proc = assay_train([*FAST, f"hydra.sweep.dir={tmp_path}/multirun", f"hydra.run.dir={tmp_path}/run", *args], tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not list(tmp_path.rglob("config.yaml"))  # no job started
