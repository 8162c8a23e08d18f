"""Compose and validate every job of a command before any job starts.

A typo, a wrong type or an out-of-range value fails in under a second with one line, instead of
after a model has loaded; in a sweep, one bad combination stops the sweep before any job runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from omegaconf import OmegaConf

from assay.config import validate
from assay.errors import UserError, check_output_dir
from assay.paths import CONF_DIR
from assay.trainers import requested_devices

HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i", "--package", "-p"}
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--resolve"}


def job_overrides(argv: list[str]) -> tuple[list[str], bool] | None:
    """(overrides, multirun) from a command line, or None when it only prints information."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in INFO_FLAGS:
            return None
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every job's override list (the basic sweeper's cartesian product for multiruns)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    if not multirun:
        return [overrides]
    if any(o.key_or_group.startswith("hydra/sweeper") for o in parsed):
        return [[o.input_line for o in parsed if not o.is_sweep_override()]]  # e.g. optuna picks values itself
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def sweeper_params_overrides(params: Any) -> list[str]:
    """``hydra.sweeper.params`` as overrides, the way the basic sweeper reads them (a command-line
    override of the same key comes later and wins)."""
    return [f"{k}={v}" for k, v in (params or {}).items()]


def search_space_jobs(base: list[str], params: Any) -> list[list[str]]:
    """For a search sweeper (Optuna): the base job, and for every searched key its extreme values
    (each choice; both ends of an interval or range), so a key or value that cannot compose fails now."""
    jobs = [base]
    for k, v in (params or {}).items():
        (override,) = OverridesParser.create().parse_overrides([f"{k}={v}"])
        key = override.get_key_element()
        if not override.is_sweep_override():
            jobs.append(base + [override.input_line])
            continue
        sweep = override.value()
        if hasattr(sweep, "list") or hasattr(sweep, "step"):
            values = list(override.sweep_string_iterator())
            values = values if hasattr(sweep, "list") else values[:1] + values[-1:]
        else:  # interval(a, b)
            start, end = sweep.start, sweep.end
            if "int" in (getattr(sweep, "tags", None) or set()) or override.input_line.split("=", 1)[1].startswith("int("):
                start, end = int(start), int(end)
            values = [str(start), str(end)]
        jobs += [base + [f"{key}={value}"] for value in values]
    return jobs


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a multirun, including the grid a ``sweep=<name>`` overlay (or any config) puts
    in ``hydra.sweeper.params``."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    base = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose(config_name="train", overrides=base, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    params = OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.get("params") else {}
    storage = str(sweeper.get("storage") or "")
    if storage.startswith("sqlite:///"):
        # SQLite creates the study file but not its folder; the study must outlive one sweep directory.
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if "BasicSweeper" in str(sweeper.get("_target_", "")):
        return expand(sweeper_params_overrides(params) + overrides, True)
    params.update({o.get_key_element(): o.input_line.split("=", 1)[1] for o in parsed if o.is_sweep_override()})
    return search_space_jobs(base, params)


def printed_config_overrides(argv: list[str]) -> list[str] | None:
    """The overrides of ``--cfg job|hydra|all`` (or ``--resolve``), which prints the composed config
    instead of running; None for any other command line."""
    if not any(a in ("--cfg", "-c", "--resolve") for a in argv):
        return None
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c") or arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            rest.append(arg)
    return rest


def preflight(argv: list[str]) -> int:
    """Validate every job; returns the number of jobs checked. ``--cfg job`` validates the config it
    prints (the values, not the data files or the machine)."""
    parsed = job_overrides(argv)
    printed = printed_config_overrides(argv)
    if parsed is None and printed is not None and not any(a in ("-m", "--multirun") for a in argv):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=printed, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            validate(cfg)
        GlobalHydra.instance().clear()
        return 1
    if parsed is None:
        return 0
    overrides, multirun = parsed
    from assay.data.multisource import check_duplicate_domains

    check_duplicate_domains(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = sweep_jobs(overrides) if multirun else [overrides]
        launcher = None
        if multirun:
            launcher = compose(config_name="train", overrides=jobs[0], return_hydra_config=True).hydra.launcher
            check_slurm_launcher(launcher)
        machine = None  # read once a job validates: counting GPUs imports torch, which a config error must not wait for
        for job in jobs:
            try:
                cfg = compose(config_name="train", overrides=job, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                spec = validate(cfg)
                check_data_files(spec)
                spec.data.check_files()  # the rows of each distinct file, read once (assay.data.tables)
                machine = machine or launcher_machine(launcher)
                check_trainer(spec, machine)
                check_output_dir(*_output_dir(cfg, multirun))
            except UserError as e:
                if len(jobs) > 1:
                    raise UserError(e.field, e.value, f"{e.allowed} (in the job with overrides {' '.join(job)})") from None
                raise
    GlobalHydra.instance().clear()
    return len(jobs)


def check_data_files(spec: Any) -> None:
    """Every local file the job's data reads (``data.train_file``, ``data.data_files.<split>``, ...)
    exists, is a readable, non-empty file: a sweep with one bad path stops before any job starts,
    instead of when that job's turn comes."""
    import dataclasses
    import os

    def files(node: Any, prefix: str):
        for f in dataclasses.fields(node) if dataclasses.is_dataclass(node) else []:
            value = getattr(node, f.name)
            key = f"{prefix}.{f.name}"
            if f.name.endswith("_file") and isinstance(value, str) and value:
                yield key, Path(value).expanduser(), value
            elif f.name.endswith("_files") and isinstance(value, dict):
                # Builder data files may also be URLs or glob patterns: only plain local paths are checked,
                # relative to a local dataset folder (``data.path``) when there is one.
                base = Path(str(getattr(node, "path", "") or ".")).expanduser()
                base = base if base.is_dir() else Path(".")
                yield from ((f"{key}.{k}", base / Path(v).expanduser(), v) for k, v in value.items() if isinstance(v, str) and "://" not in v and not any(c in v for c in "*?["))
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    yield from files(item, f"{key}[{i}]")
            elif dataclasses.is_dataclass(value):
                yield from files(value, key)

    for key, path, value in files(spec.data, "data"):
        if not path.exists():
            raise UserError(key, value, "file does not exist")
        if not path.is_file():
            raise UserError(key, value, "is a directory, not a file" if path.is_dir() else "is not a regular file")
        if not os.access(path, os.R_OK):
            raise UserError(key, value, "file is not readable")
        if path.stat().st_size == 0:
            raise UserError(key, value, "file is empty")


def check_slurm_launcher(launcher: Any) -> None:
    """Before a sweep is submitted: sbatch exists, the controller answers, and the partition has the
    CPUs, memory, GPUs, nodes and time the launcher profile asks for (else SLURM would either refuse
    each job or leave it pending forever)."""
    import shutil
    import subprocess

    if "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UserError("hydra/launcher", "slurm", "sbatch/sinfo not found on PATH: submit from a SLURM login node (or start slurm/local_cluster.sh up)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l|%D|%a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError("hydra/launcher", "slurm", f"SLURM controller unreachable (sinfo: {type(e).__name__})") from None
    if out.returncode != 0 or not out.stdout.strip():
        why = (out.stderr.strip().splitlines() or ["no partitions"])[-1]
        raise UserError("hydra/launcher", "slurm", f"SLURM controller unreachable (sinfo: {why})")
    parts: dict[str, dict[str, Any]] = {}
    default = None
    for line in out.stdout.strip().splitlines():
        name, cpus, mem, gres, limit, nodes, avail = line.split("|")
        if name.endswith("*"):
            name = name[:-1]
            default = name
        p = parts.setdefault(name, {"cpus": 0, "mem": 0, "gpus": 0, "minutes": None, "nodes": 0, "up": False})
        p["cpus"] = max(p["cpus"], _int(cpus))
        p["mem"] = max(p["mem"], _int(mem))
        p["gpus"] = max(p["gpus"], sum(_int(g.split(":")[-1].split("(")[0]) for g in gres.split(",") if g.startswith("gpu")))
        p["minutes"] = _minutes(limit)
        p["nodes"] += _int(nodes)
        p["up"] = p["up"] or avail == "up"
    name = launcher.get("partition") or default
    if name not in parts:
        raise UserError("hydra.launcher.partition", launcher.get("partition"), f"no such partition; this cluster has {sorted(parts)}")
    p = parts[name]
    if not p["up"]:
        raise UserError("hydra.launcher.partition", name, "partition is not up (sinfo shows it down or drained)")
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = int(launcher.get("cpus_per_task") or 1) * tasks
    if cpus > p["cpus"]:
        raise UserError("hydra.launcher.cpus_per_task", launcher.get("cpus_per_task"), f"x tasks_per_node={tasks} asks {cpus} CPUs; partition {name} has at most {p['cpus']} per node")
    if launcher.get("mem_gb") and int(launcher.mem_gb) * 1024 > p["mem"]:
        raise UserError("hydra.launcher.mem_gb", launcher.mem_gb, f"partition {name} has at most {p['mem'] // 1024} GB ({p['mem']} MB) per node")
    gpus = int(launcher.get("gpus_per_node") or 0)
    if gpus > p["gpus"]:
        raise UserError("hydra.launcher.gpus_per_node", gpus, f"partition {name} has {p['gpus']} GPUs per node")
    if int(launcher.get("nodes") or 1) > p["nodes"]:
        raise UserError("hydra.launcher.nodes", launcher.nodes, f"partition {name} has {p['nodes']} nodes")
    if p["minutes"] is not None and int(launcher.get("timeout_min") or 0) > p["minutes"]:
        raise UserError("hydra.launcher.timeout_min", launcher.timeout_min, f"partition {name} allows at most {p['minutes']} minutes")


def _int(text: str) -> int:
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


def _minutes(limit: str) -> int | None:
    """sinfo's time limit ('infinite', 'days-hh:mm:ss', 'hh:mm:ss', 'mm:ss') in minutes."""
    if limit in ("infinite", "n/a", "UNLIMITED") or not limit:
        return None
    days, _, rest = limit.rpartition("-")
    fields = [int(x) for x in rest.split(":")]
    while len(fields) < 3:
        fields.insert(0, 0)
    h, m, s = fields[-3:]
    return (int(days) if days else 0) * 1440 + h * 60 + m + (1 if s else 0)


# --------------------------------------------------------------------------------------------------
# The trainer against the machine its jobs will run on


@dataclass
class Machine:
    """What the jobs of a command will run on: this machine, or the nodes a SLURM launcher asks for."""

    where: str
    gpus: int
    cpus: int
    bf16: Optional[bool] = None
    """Whether the GPUs do bfloat16 (None: not known from here)."""
    local: bool = True
    gpu_name: str = "this GPU"


def this_machine() -> Machine:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpus = os.cpu_count() or 1  # the node's cores (a SLURM task's affinity may hold fewer than its siblings share)
    return Machine("this machine", gpus, cpus, bf16=bool(gpus) and torch.cuda.is_bf16_supported(), gpu_name=torch.cuda.get_device_name(0) if gpus else "no GPU")


def launcher_machine(launcher: Any) -> Machine:
    """The job's share of a node as the launcher requests it (SLURM), else this machine."""
    if launcher is None or "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return this_machine()
    gpus = int(launcher.get("gpus_per_node") or 0)
    cpus = int(launcher.get("cpus_per_task") or 1) * int(launcher.get("tasks_per_node") or 1)
    return Machine(f"the SLURM job (hydra.launcher.gpus_per_node={gpus})", gpus, cpus, bf16=None, local=False)


def check_trainer(spec: Any, machine: Optional[Machine] = None) -> None:
    """Before any job starts: the trainer's strategy is installed, its accelerator is present, it asks
    for no more devices than there are, its precision runs on that device, and what needs several
    processes gets them. One line each (:class:`UserError`)."""
    import importlib.util

    import torch

    machine = machine or this_machine()
    t = spec.trainer
    needed = t.info.requires
    if needed and importlib.util.find_spec(needed) is None:
        raise UserError("trainer.strategy", t.strategy, f"{needed} is not installed; pip install 'assay[{needed}]'")
    accelerator = t.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if machine.gpus else "cpu"
    if accelerator in ("gpu", "cuda") and machine.gpus == 0:
        if machine.local:
            build = f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
            raise UserError("trainer.accelerator", t.accelerator, f"no CUDA GPU on {machine.where} ({build}); use trainer=cpu")
        raise UserError("trainer.accelerator", t.accelerator, f"{machine.where} gets no GPU; set hydra.launcher.gpus_per_node, or use trainer=cpu")
    if accelerator == "mps" and not (machine.local and torch.backends.mps.is_available()):
        raise UserError("trainer.accelerator", t.accelerator, f"no Apple MPS device on {machine.where}; use trainer=cpu")
    if accelerator == "tpu":
        from pytorch_lightning.accelerators import XLAAccelerator

        if not XLAAccelerator.is_available():
            raise UserError("trainer.accelerator", t.accelerator, f"no TPU (torch_xla) on {machine.where}")

    available = machine.gpus if accelerator in ("gpu", "cuda") else (1 if accelerator in ("mps", "tpu") else machine.cpus)
    unit = "GPU(s)" if accelerator in ("gpu", "cuda") else ("CPU core(s)" if accelerator == "cpu" else "device(s)")
    devices = requested_devices(t.devices)
    if isinstance(devices, list):
        missing = [i for i in devices if i >= available]
        if missing:
            raise UserError("trainer.devices", t.devices, f"{machine.where} has {available} {unit} (indices 0-{available - 1}); {missing} do not exist")
        count = len(devices)
    elif devices is None:
        count = available if accelerator in ("gpu", "cuda") else 1
    else:
        count = devices
        if count > available:
            raise UserError("trainer.devices", t.devices, f"{machine.where} has {available} {unit}; use at most {available} (or -1 for all)")

    precision = t.precision_name
    if accelerator in ("gpu", "cuda") and precision.startswith("bf16") and machine.bf16 is False:
        raise UserError("trainer.precision", t.precision, f"{machine.gpu_name} does not support bfloat16; use 16-mixed or 32-true")
    if precision.startswith("transformer-engine"):
        if accelerator not in ("gpu", "cuda"):
            raise UserError("trainer.precision", t.precision, "Transformer Engine runs on NVIDIA GPUs only; use bf16-mixed or 32-true")
        if importlib.util.find_spec("transformer_engine") is None:
            raise UserError("trainer.precision", t.precision, "transformer_engine is not installed; use bf16-mixed")
    if accelerator == "cpu" and precision == "16-mixed":
        raise UserError("trainer.precision", t.precision, "float16 autocast is not supported on the CPU; use bf16-mixed or 32-true")

    attention = getattr(spec.model, "attn_implementation", None)
    if attention == "flash_attention_2":
        if accelerator not in ("gpu", "cuda"):
            raise UserError("model.attn_implementation", attention, "runs on CUDA GPUs only; use sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise UserError("model.attn_implementation", attention, "flash-attn is not installed (pip install flash-attn --no-build-isolation); use sdpa")


def _output_dir(cfg: Any, multirun: bool) -> tuple[Any, str]:
    """The directory to probe for the run (or sweep) and its field. The default directories end in
    the ``assay.unique`` resolver, which claims a directory when it is resolved, so for those the
    log root is probed instead, and the claim is left to the job itself."""
    field = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    node = cfg.hydra.sweep if multirun else cfg.hydra.run
    raw = str(node._get_node("dir")._value())
    if "assay.unique" in raw:
        return cfg.paths.log_dir, "paths.log_dir"
    return node.dir, field
