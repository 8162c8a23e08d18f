"""Before a sweep is submitted to SLURM: the launcher profile against the cluster (``sinfo``).

``hydra/launcher=slurm_local`` submits to the single-node cluster of this checkout's
``slurm/local_cluster.sh``, whose config is ``<state dir>/slurm.conf`` (``ASSAY_SLURM_STATE``, by
default ``<checkout>/.slurm``): ``use_local_cluster`` points ``SLURM_CONF`` at it for every SLURM
command of the sweep, unless the user has set ``SLURM_CONF`` already.

What follows a submitted sweep (submitit's watcher, the jobs' states) is ``assay.run.slurm``; the
share of a node the launcher requests, checked against the trainer, is ``assay.run.machine``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from assay.errors import UserError
from assay.paths import CONF_DIR

LOCAL_LAUNCHER = "LocalSlurmLauncher"
"""The class name of the ``slurm_local`` profiles' launcher (``hydra_plugins.assay_slurm_launcher``)."""

LOCAL_CLUSTER_SCRIPT = CONF_DIR.parent / "slurm" / "local_cluster.sh"


def local_cluster_conf() -> Optional[Path]:
    """The slurm.conf ``slurm/local_cluster.sh`` writes for this checkout: ``$ASSAY_SLURM_STATE/slurm.conf``,
    else ``<checkout>/.slurm/slurm.conf``; None for an install without the script (a wheel) and no
    ``ASSAY_SLURM_STATE``."""
    state = os.environ.get("ASSAY_SLURM_STATE")
    if state:
        return Path(state).absolute() / "slurm.conf"
    if LOCAL_CLUSTER_SCRIPT.is_file():
        return LOCAL_CLUSTER_SCRIPT.parents[1] / ".slurm" / "slurm.conf"
    return None


def use_local_cluster(choice: str = "slurm_local") -> None:
    """SLURM_CONF for this process (and so for sbatch, squeue, scancel and the jobs): the local cluster's
    config, unless SLURM_CONF is set already. A cluster that was never started is one line."""
    if os.environ.get("SLURM_CONF"):
        return
    conf = local_cluster_conf()
    if conf is None:
        raise UserError("hydra/launcher", choice, "no slurm/local_cluster.sh next to this install: set ASSAY_SLURM_STATE to the cluster's state dir, or SLURM_CONF")
    if not conf.is_file():
        raise UserError("hydra/launcher", choice, f"the local cluster is not set up (no {conf}): start it with sudo slurm/local_cluster.sh up, or set SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)


def is_local_launcher(launcher: Any) -> bool:
    return str(launcher.get("_target_", "")).rsplit(".", 1)[-1] == LOCAL_LAUNCHER


def check_slurm_launcher(launcher: Any, choice: str = "slurm") -> None:
    """Before a sweep is submitted: sbatch exists, the controller answers, and the partition has the
    CPUs, memory, GPUs, nodes and time the launcher profile asks for (else SLURM would either refuse
    each job or leave it pending forever). ``choice``: the profile the user chose (``hydra/launcher=
    slurm_local``), which the errors name. For the local cluster's profile, SLURM_CONF is set here
(``use_local_cluster``)."""
    import shutil
    import subprocess

    if "SlurmLauncher" not in str(launcher.get("_target_", "")):
        return
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UserError("hydra/launcher", choice, "sbatch/sinfo not found on PATH: submit from a SLURM login node (or start slurm/local_cluster.sh up)")
    if is_local_launcher(launcher):
        use_local_cluster(choice)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%m|%G|%l|%D|%a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError("hydra/launcher", choice, f"SLURM controller unreachable (sinfo: {type(e).__name__})") from None
    if out.returncode != 0 or not out.stdout.strip():
        why = (out.stderr.strip().splitlines() or ["no partitions"])[-1]
        raise UserError("hydra/launcher", choice, f"SLURM controller unreachable (sinfo: {why})")
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
