"""A real single-node SLURM cluster (slurm/local_cluster.sh): a sweep through the submitit launcher,
the preflight's cluster checks, and a preempted job that is requeued and resumes in place.

The cluster is started here when it is not already up (root needed; the Debian packages are
installed if missing) and stopped afterwards when this module started it.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assay.compare import compare
from assay.dynamics.store import read_store
from tests.conftest import without_speed

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "local_cluster.sh"
TRAIN = str(Path(sys.executable).parent / "assay-train")


STATE = Path(os.environ.get("ASSAY_SLURM_STATE", "/var/lib/assay-slurm"))
# The script's failures that the set-up cannot fix: these skip; any other failure, and a hang, fail.
UNFIXABLE = ("no apt-get to install them", "apt-get update failed", "apt-get install munge slurmctld slurmd slurm-client failed")


def _foreign_cluster_up() -> bool:
    """A controller answers that slurm/local_cluster.sh did not start (a site's own cluster): use it as it is."""
    if shutil.which("scontrol") is None or (STATE / "slurmctld.pid").is_file():
        return False
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "UP" in r.stdout


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"slurm/local_cluster.sh {' '.join(args)} hung for {timeout:.0f} s (output: {e.stderr or e.stdout or 'none'!r})")


@pytest.fixture(scope="module")
def cluster(request):
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it starts munged, slurmctld and slurmd)")
    if _foreign_cluster_up():
        yield
        return
    # Each module holds a lease: the daemons stop when the last module using them is done, even when
    # two test workers use the cluster at once.
    lease = f"pytest-{os.getpid()}-{request.module.__name__.rsplit('.', 1)[-1]}"
    installed = all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged"))
    r = _script("up", "--lease", lease, timeout=180 if installed else 900)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no output"])[-1]
        if any(reason in why for reason in UNFIXABLE):
            pytest.skip(f"the local SLURM cluster could not start: {why}")
        pytest.fail(f"slurm/local_cluster.sh up failed: {why}")
    yield
    _script("down", "--lease", lease, timeout=120)


def _env(tmp_path, **extra):
    env = {**os.environ, "ASSAY_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **extra}
    for k in [k for k in env if k.startswith("SLURM_")]:
        env.pop(k)  # never inherit a surrounding job's identity
    return env


@pytest.mark.cli
def test_the_daemons_do_not_hold_the_up_lock_so_a_second_up_returns(cluster):
    """`up` serialises its callers with a lock on fd 9; a daemon that inherited that descriptor kept
    it for its whole life, and the next `up` (the next test module) waited on it forever."""
    lock = (STATE / "up.lock").resolve()
    for name in ("munged", "slurmctld", "slurmd"):
        pid_file = STATE / f"{name}.pid"
        if not pid_file.is_file():
            continue  # not started by the script (a site's cluster, or munged that was already running)
        fds = Path(f"/proc/{pid_file.read_text().strip()}/fd")
        held = [fd.name for fd in fds.iterdir() if os.path.realpath(fd) == str(lock)] if fds.is_dir() else []
        assert not held, f"{name} holds {lock} on fd {held}"
    probe = f"probe-{os.getpid()}"
    assert _script("up", "--lease", probe, timeout=60).returncode == 0
    r = _script("down", "--lease", probe, timeout=60)  # the module's own lease keeps the cluster up
    assert r.returncode == 0 and "kept up" in r.stdout, r.stdout
    assert "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30).stdout


@pytest.mark.cli
def test_sweep_of_four_jobs_on_slurm_then_compare(cluster, tmp_path):
    sweep = tmp_path / "sweep"
    r = subprocess.run(
        [TRAIN, "-m", "sweep=smoke", "hydra/launcher=slurm_local", "logger=csv", f"hydra.sweep.dir={sweep}"],
        env=_env(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    # one sbatch array, one task per job, each in its own run directory
    (script,) = (sweep / ".submitit").glob("*_submission.sh")
    sbatch = script.read_text()
    for flag in ("--array=0-3%4", "--cpus-per-task=1", "--mem=1GB", "--ntasks-per-node=1", "--signal=USR2@30", "--time=20"):
        assert f"#SBATCH {flag}\n" in sbatch, flag
    assert "export HF_HUB_OFFLINE=1" in sbatch  # the profile's setup lines
    for job in range(4):
        run = sweep / str(job)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["global_step"] == 2
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
    logs = list((sweep / ".submitit").glob("*_log.out"))
    assert len(logs) == 4
    result = compare([str(sweep)], by=["optim.lr"], metrics=["test/loss"], out=tmp_path / "compare", quiet=True)
    table = result["table"]
    assert table["optim.lr"].tolist() == ["0.001", "0.003"] and table["n"].tolist() == [2, 2]
    assert all(r.status == "completed" for r in result["runs"])
    assert (tmp_path / "compare" / "test_loss_vs_optim.lr.png").is_file()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb=100000: partition debug has at most"),
        ("hydra.launcher.cpus_per_task=512", "hydra.launcher.cpus_per_task=512: x tasks_per_node=1 asks 512 CPUs"),
        ("hydra.launcher.gpus_per_node=8", "hydra.launcher.gpus_per_node=8: partition debug has 0 GPUs"),
        ("hydra.launcher.partition=a100", "hydra.launcher.partition='a100': no such partition"),
    ],
)
@pytest.mark.cli
def test_profile_larger_than_the_partition_is_one_line(cluster, tmp_path, override, expected):
    r = subprocess.run([TRAIN, "-m", "sweep=smoke", "hydra/launcher=slurm_local", override], env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err


def _fake_bin(tmp_path, with_slurm: bool) -> str:
    """A PATH with python's own directory and, optionally, sbatch/sinfo that cannot reach a controller."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_slurm:
        for tool in ("sbatch", "sinfo"):
            (bin_dir / tool).write_text("#!/bin/sh\necho 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
            (bin_dir / tool).chmod(0o755)
    return f"{bin_dir}:{Path(sys.executable).parent}"


@pytest.mark.parametrize(
    "with_slurm, expected",
    [(False, "sbatch/sinfo not found on PATH"), (True, "SLURM controller unreachable (sinfo: slurm_load_partitions: Unable to contact slurm controller")],
)
@pytest.mark.cli
def test_missing_or_unreachable_slurm_is_one_line(tmp_path, with_slurm, expected):
    env = _env(tmp_path, PATH=_fake_bin(tmp_path, with_slurm))
    r = subprocess.run([sys.executable, TRAIN, "-m", "sweep=smoke", "hydra/launcher=slurm_local"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: hydra/launcher='slurm_local': "), err  # the profile the user chose, not "slurm"


@pytest.mark.cli
def test_preempted_job_checkpoints_requeues_and_resumes_in_place(cluster, tmp_path):
    """USR2 (what SLURM sends on preemption or ahead of the time limit, via submitit) mid-run: the job
    saves last.ckpt, submitit requeues the same job pickle, and the second start resumes in the same
    run directory to the same result as an uninterrupted run."""
    common = ["debug=fast", "trainer.max_steps=16", "checkpoint_every_n_steps=4", "trainer.val_check_interval=4", "logger=csv"]
    env = _env(tmp_path, OMP_NUM_THREADS="1")  # the cluster profile's thread count, for a bitwise reference
    ref = tmp_path / "reference"
    r = subprocess.run([TRAIN, *common, f"hydra.run.dir={ref}"], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [TRAIN, "-m", *common, "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}"],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    run = sweep / "0"
    try:
        job = None
        deadline = time.time() + 300
        while time.time() < deadline and launcher.poll() is None:
            parts = sorted((run / "dynamics").glob("part-*.parquet"))
            if job is None:
                ids = list((sweep / ".submitit").glob("*_submitted.pkl"))
                job = ids[0].name.split("_")[0] if ids else None
            if job and any(int(p.stem.split("-")[2]) >= 5 for p in parts):
                break
            time.sleep(0.1)
        assert job is not None and launcher.poll() is None, "the job never got going"
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
        # Slurm holds a requeued job for a while (BeginTime); release it at once for the test.
        deadline = time.time() + 120
        while time.time() < deadline:
            show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
            if "Restarts=1" in show and "JobState=PENDING" in show:
                subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], timeout=30)
                break
            time.sleep(0.5)
        assert launcher.wait(timeout=400) == 0, launcher.stderr.read()[-3000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    # what the task printed, and the run's log (submitit's own messages, "Requeued job ...", go to train.log)
    log = "".join(p.read_text() for pattern in (".submitit/*_log.out", ".submitit/*_log.err", "*/train.log") for p in sorted(sweep.glob(pattern)))
    # the signal's own checkpoint (not a periodic one), the requeue, and the resume from it
    assert "caught SIGUSR2: saved" in log and "Requeued job" in log and "resuming from" in log, log[-2000:]
    show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "Restarts=1" in show, show

    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert b["global_step"] == a["global_step"] == 16
    assert b["resumed_from"] == str(run / "checkpoints" / "last.ckpt") and a["resumed_from"] is None
    assert b["data"]["data_order_fingerprint"] == a["data"]["data_order_fingerprint"]
    assert b["metrics"].keys() == a["metrics"].keys()
    for k, v in without_speed(a["metrics"]).items():  # all but the wall-clock speed/... ones
        assert b["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
    sa, sb = read_store(ref / "dynamics"), read_store(run / "dynamics")
    assert not sb.duplicated(["id", "step"]).any() and len(sb) == len(sa) == 16 * 8
    assert sb[["id", "step"]].equals(sa[["id", "step"]])


def _array_task_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", job.split("_")[0]], capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("|", 1) for line in out.split() if "|" in line).get(job, "")


@pytest.mark.cli
def test_cancelled_job_ends_the_wait_and_compare_tells_it_from_running(cluster, tmp_path):
    """No accounting on the local cluster (sacct fails): scancel of one array task must end the
    submitting command with that job reported failed, the other job collected; assay-compare shows
    the job as running while it runs and as cancelled afterwards."""
    sweep = tmp_path / "sweep"
    launcher = subprocess.Popen(
        [TRAIN, "-m", "debug=fast", "logger=csv", "eval.val_generate=false", "trainer.max_steps=2,5000", "trainer.val_check_interval=2",
         "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}"],
        env=_env(tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        job, deadline = None, time.time() + 400
        while time.time() < deadline and launcher.poll() is None:
            ids = list((sweep / ".submitit").glob("*_submitted.pkl")) if (sweep / ".submitit").is_dir() else []
            array = ids[0].name.split("_")[0] if ids else None
            if array and _array_task_state(f"{array}_1") == "RUNNING" and (sweep / "1" / "config.yaml").is_file():
                job = f"{array}_1"
                break
            time.sleep(1)
        assert launcher.poll() is None, launcher.communicate()[1][-3000:]
        assert job is not None, "the long job never started"
        running = {Path(r.name).name: r for r in compare([str(sweep)], by=["trainer.max_steps"], out=tmp_path / "c1", plots=False, quiet=True)["runs"]}
        assert running["1"].status == "running" and "RUNNING" in running["1"].reason, running["1"]

        subprocess.run(["scancel", job], check=True, timeout=30)
        out, err = launcher.communicate(timeout=400)  # the wait ends (it used to poll forever)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode != 0
    text = out + err
    reported = [line for line in text.splitlines() if f"SLURM job {job}: cancelled" in line]
    assert reported and "sweep job 1 (" in reported[0] and "trainer.max_steps=5000" in reported[0], text[-3000:]
    assert "1 of 2 sweep jobs did not complete" in text
    assert "Bypassing sacct error" not in text and text.count("sacct is unavailable") <= 1, text[-3000:]
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "completed"  # the other job was collected

    runs = {Path(r.name).name: r for r in compare([str(sweep)], by=["trainer.max_steps"], out=tmp_path / "c2", plots=False, quiet=True)["runs"]}
    assert runs["0"].status == "completed"
    assert runs["1"].status == "cancelled" and f"SLURM job {job} was cancelled" in runs["1"].reason, runs["1"]
