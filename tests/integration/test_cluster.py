"""`ray job submit` against a local head started by cluster/start_local.sh (issue 4, "cluster"): the job
trains the tiny preset to SUCCEEDED and its metrics appear in the job logs; cluster/stop_local.sh stops
that head only."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def head_alive(temp_dir: str) -> bool:
    """Whether any process still names this head's temp dir on its command line."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if f"{temp_dir}/" in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.ray
def test_ray_job_submit_trains_on_a_local_head(tiny_shards: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the head runs without token auth (loopback only)
    shards = tiny_shards
    port, dashboard, agent = free_port(), free_port(), free_port()
    temp_dir = f"/tmp/ray-intint-test-{port}"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    address = f"http://127.0.0.1:{dashboard}"
    start = [str(REPO / "cluster" / "start_local.sh"), "--port", str(port),
             "--dashboard-port", str(dashboard), "--agent-port", str(agent), "--num-cpus", "4",
             "--temp-dir", temp_dir]
    started = subprocess.run(start, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        job_id = f"intint-test-{uuid.uuid4().hex[:8]}"
        submit_args = ("job", "submit", "--address", address, "--submission-id", job_id, "--no-wait",
                       "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
                       sys.executable, "jobs/train_finegym.py", "--preset", "tiny", "--shards", str(shards),
                       "--storage-path", str(tmp_path / "runs"), "--name", "job", "--epochs", "1",
                       "--num-workers", "1", "--wandb", "disabled")
        # A freshly started head answers HTTP before its job agent is up ("No available agent to submit
        # job, please try again later"); on a loaded machine that takes tens of seconds. Retry only that.
        agent_deadline = time.monotonic() + 120
        while True:
            submit = ray_cli(*submit_args, env=env)
            agent_missing = "No available agent" in submit.stdout + submit.stderr
            if submit.returncode == 0 or not agent_missing or time.monotonic() > agent_deadline:
                break
            time.sleep(3)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        client = JobSubmissionClient(address)
        deadline, status = time.monotonic() + 180, None
        while time.monotonic() < deadline:
            status = client.get_job_status(job_id)
            if status.is_terminal():
                break
            time.sleep(1)
        logs = ray_cli("job", "logs", "--address", address, job_id, env=env).stdout
        assert status == JobStatus.SUCCEEDED, f"{status}\n{logs[-3000:]}"
        test_line = next(line for line in logs.splitlines() if "[intint] test (" in line)
        assert "fused_top1=" in test_line and "integrity_top1=" in test_line
        assert "[intint] epoch 0 done" in logs
        noise = ("PlacementGroupCleaner", "PreemptionWatcher", "Failed to query Ray Train Controller")
        assert not [line for line in logs.splitlines() if any(n in line for n in noise)], logs[-3000:]
        results = json.loads((tmp_path / "runs" / "job" / "results.json").read_text())
        assert 0.0 <= results["fused"]["top1"] <= 1.0
    finally:
        stopped = subprocess.run([str(REPO / "cluster" / "stop_local.sh"), "--temp-dir", temp_dir], env=env,
                                 cwd=REPO, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "SIGKILL" not in stopped.stdout, stopped.stdout  # the head stops cleanly, in order
    deadline = time.monotonic() + 30  # killed processes may take a moment to leave /proc
    while head_alive(temp_dir) and time.monotonic() < deadline:
        time.sleep(1)
    assert not head_alive(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)
