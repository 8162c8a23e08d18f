"""A real single-node SLURM cluster (slurm/local_cluster.sh): a sweep through the submitit launcher,
the preflight's cluster checks, a preempted job that is requeued and resumes in place, and two
clusters (two checkouts) side by side.

The cluster is this checkout's (state in ASSAY_SLURM_STATE, by default <checkout>/.slurm): started
here when it is not already up (root needed; the Debian packages are installed if missing) and
stopped afterwards when no other user holds a lease on it. The launcher finds it by itself
(hydra/launcher=slurm_local sets SLURM_CONF); the tests' own scontrol/scancel/squeue get SLURM_CONF
through ``_slurm``.
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


STATE = Path(os.environ.get("ASSAY_SLURM_STATE") or REPO / ".slurm").absolute()
CONF = STATE / "slurm.conf"
# The script's failures that the set-up cannot fix: these skip; any other failure, and a hang, fail.
UNFIXABLE = ("no apt-get to install them", "apt-get update failed", "apt-get install munge slurmctld slurmd slurm-client failed")


def _script(*args: str, timeout: float, state: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env, **({"ASSAY_SLURM_STATE": str(state)} if state else {})}
    environ.pop("SLURM_CONF", None)
    try:
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=environ)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"slurm/local_cluster.sh {' '.join(args)} hung for {timeout:.0f} s (output: {e.stderr or e.stdout or 'none'!r})")


def _slurm(*args: str, conf: Path = CONF, check: bool = False) -> subprocess.CompletedProcess:
    """A SLURM client command (scontrol, scancel, squeue, sinfo) against one local cluster."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=check, env={**os.environ, "SLURM_CONF": str(conf)})


def _needs_root() -> None:
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (it starts munged, slurmctld and slurmd)")


@pytest.fixture(scope="module")
def cluster(request):
    _needs_root()
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
    assert "UP" in _slurm("scontrol", "ping").stdout


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
    """A PATH with python's own directory and, optionally, sbatch/sinfo that cannot reach a controller
    (their error names the SLURM_CONF they were given)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_slurm:
        for tool in ("sbatch", "sinfo"):
            (bin_dir / tool).write_text("#!/bin/sh\necho \"slurm_load_partitions: Unable to contact slurm controller (connect failure) [$SLURM_CONF]\" >&2\nexit 1\n")
            (bin_dir / tool).chmod(0o755)
    return f"{bin_dir}:{Path(sys.executable).parent}"


@pytest.mark.parametrize(
    "case, expected",
    [
        pytest.param("no slurm", "sbatch/sinfo not found on PATH", id="no slurm"),
        # slurm_local finds this checkout's cluster by itself, or keeps the user's SLURM_CONF
        pytest.param("local", "SLURM controller unreachable (sinfo: slurm_load_partitions: Unable to contact slurm controller (connect failure) [{state}/slurm.conf]", id="local"),
        pytest.param("user's SLURM_CONF", "SLURM controller unreachable (sinfo: slurm_load_partitions: Unable to contact slurm controller (connect failure) [/site/slurm.conf]", id="user conf"),
        pytest.param("never started", "the local cluster is not set up (no {state}/never/slurm.conf): start it with sudo slurm/local_cluster.sh up", id="never started"),
    ],
)
@pytest.mark.cli
def test_missing_or_unreachable_slurm_is_one_line(tmp_path, case, expected):
    state = tmp_path / "state"
    state.mkdir()
    (state / "slurm.conf").write_text("ClusterName=assaylocal\n")
    env = _env(tmp_path, PATH=_fake_bin(tmp_path, case != "no slurm"), ASSAY_SLURM_STATE=str(state / "never" if case == "never started" else state))
    if case == "user's SLURM_CONF":
        env["SLURM_CONF"] = "/site/slurm.conf"
    r = subprocess.run([sys.executable, TRAIN, "-m", "sweep=smoke", "hydra/launcher=slurm_local"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and expected.format(state=state) in err and len(err.splitlines()) == 1, err
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
        _slurm("scancel", "--signal=USR2", job, check=True)
        # Slurm holds a requeued job for a while (BeginTime); release it early for the test, but not in
        # the second the node revoked the first start's credential (at the requeue): slurmd refuses a
        # credential issued in that second too ("Killing non-startable batch job: Job credential
        # revoked", and the job ends FAILED).
        deadline = time.time() + 120
        while time.time() < deadline:
            show = _slurm("scontrol", "show", "job", job).stdout
            if "Restarts=1" in show and "JobState=PENDING" in show:
                time.sleep(1.1)
                _slurm("scontrol", "update", f"jobid={job}", "StartTime=now")
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
    show = _slurm("scontrol", "show", "job", job).stdout
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
    out = _slurm("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", job.split("_")[0]).stdout
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

        _slurm("scancel", job, check=True)
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


def _conf_values(state: Path) -> dict[str, str]:
    lines = (state / "slurm.conf").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith(("#", "NodeName", "PartitionName")))


def _pids(state: Path) -> dict[str, int]:
    return {name: int((state / f"{name}.pid").read_text()) for name in ("munged", "slurmctld", "slurmd")}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.cli
def test_two_state_dirs_are_two_clusters_and_down_stops_only_its_own(tmp_path):
    """Two checkouts (two state dirs) on one machine: each has its own config, ports, munge socket and
    daemons, and `down` in one leaves the other running; an older machine-wide cluster is named, not
    stopped; a port taken by something else is one line."""
    _needs_root()
    a, b = tmp_path / "a", tmp_path / "b"
    assert _script("env", state=a, timeout=30).stdout.strip() == f"export SLURM_CONF={a}/slurm.conf"
    try:
        for state in (a, b):
            r = _script("up", state=state, timeout=180)
            assert r.returncode == 0 and f"export SLURM_CONF={state}/slurm.conf" in r.stdout, r.stderr
        ca, cb = _conf_values(a), _conf_values(b)
        for key in ("SlurmctldPort", "SlurmdPort", "AuthInfo", "StateSaveLocation", "SlurmdSpoolDir", "SlurmctldPidFile", "SlurmctldLogFile"):
            assert ca[key] != cb[key], key
        assert ca["AuthInfo"] == f"socket={a}/munge/munge.socket" and ca["StateSaveLocation"].startswith(str(a))
        pa, pb = _pids(a), _pids(b)
        assert set(pa.values()).isdisjoint(pb.values()) and all(map(_alive, [*pa.values(), *pb.values()]))
        for state in (a, b):
            assert "UP" in _slurm("scontrol", "ping", conf=state / "slurm.conf").stdout

        # A cluster of the old machine-wide kind still running (here: b's munged in its pid file) is named.
        old = tmp_path / "old"
        old.mkdir()
        (old / "munged.pid").write_text(f"{pb['munged']}\n")
        r = _script("up", state=a, timeout=60, ASSAY_SLURM_OLD_STATE=str(old))
        assert r.returncode == 0 and f"munged={pb['munged']}, pid files in {old}); it is left alone" in r.stderr, r.stderr
        assert _alive(pb["munged"]) and _pids(a) == pa  # the second `up` only checked

        # Something else on a's ports: a third cluster told to use them says so in one line.
        r = _script("up", state=tmp_path / "c", timeout=60, ASSAY_SLURM_PORT=ca["SlurmctldPort"])
        why = r.stderr.strip()
        assert r.returncode != 0 and f"port {ca['SlurmctldPort']} (SlurmctldPort of the cluster in {tmp_path / 'c'}) is taken by another program" in why, why
        assert len(why.splitlines()) == 1 and not (tmp_path / "c" / "munged.pid").exists()

        assert _script("down", state=a, timeout=60).stdout.strip() == "slurm down"
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, pa.values())):
            time.sleep(0.1)
        assert not any(map(_alive, pa.values())), pa
        assert all(map(_alive, pb.values())) and _script("status", state=b, timeout=30).returncode == 0
        # b still runs jobs, with its own munge key
        job = _slurm("sbatch", "--parsable", "--wait", f"--output={tmp_path}/job.out", "--wrap", "echo ran on b", conf=b / "slurm.conf")
        assert job.returncode == 0 and (tmp_path / "job.out").read_text() == "ran on b\n", job.stderr
    finally:
        for state in (a, b):
            _script("down", state=state, timeout=60)
    assert not any(map(_alive, pb.values())), pb
