"""A machine that cannot reach the Hub switches to offline mode at once, instead of a minute of
retries per file; one that can, or one already offline, is left as it is."""

import os
import socket
import subprocess
import sys
import time

import pytest

from assay.hub import OFFLINE_VARS, offline_when_unreachable
from tests.conftest import REPO


@pytest.fixture
def online_env(monkeypatch):
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_unreachable_hub_sets_offline_mode(online_env):
    online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert offline_when_unreachable(timeout=2) is True
    assert all(os.environ[v] == "1" for v in OFFLINE_VARS)


def test_a_reachable_hub_is_left_online(online_env):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert offline_when_unreachable(timeout=2) is False
        assert not any(v in os.environ for v in OFFLINE_VARS)
    finally:
        server.close()


def test_offline_already_is_not_probed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert offline_when_unreachable() is False


@pytest.mark.cli
def test_a_hub_model_without_a_network_is_one_line_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
    # a port held bound but not listening: connections are refused, and no other process (a test's
    # server started meanwhile) can take it over between the probe and the download
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{held.getsockname()[1]}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    started = time.time()
    r = subprocess.run([sys.executable, "-m", "assay.train", "debug=fast", "logger=none", "model=hf", "model.name_or_path=someone/some-model",
                        f"hydra.run.dir={tmp_path / 'run'}"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    held.close()
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: model.name_or_path='someone/some-model'"), r.stderr[-2000:]
    assert time.time() - started < 45  # not a minute of retries
