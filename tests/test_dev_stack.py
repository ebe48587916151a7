"""`bud dev up --detach` / `status` / `down`: the whole embedded stack as a newcomer runs it, on free ports."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from core.processes import StartupError, free_port
from core.settings import Settings
from devstack.stack import Stack
from tests.model_files import write_tiny_llama
from tests.helpers import server_state_dir


def stack_env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BUD_STATE_DIR": str(state),
        "BUD_API_PORT": str(free_port()),
        "BUD_GATEWAY_PORT": str(free_port()),
        "BUD_DATABASE_URL": f"postgresql://bud@127.0.0.1:{free_port()}/bud",
        "BUD_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "BUD_TEMPORAL_UI_PORT": str(free_port()),
        "BUD_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "BUD_CLAMD_PORT": str(free_port()),
        "BUD_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "BUD_WORKER_METRICS_BASE_PORT": str(free_port()),
        "COLUMNS": "200",  # rich wraps CLI messages to the terminal width
    }


def bud(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def recorded_pids(state: Path) -> list[int]:
    return [int(path.read_text()) for path in (state / "pids").glob("*.pid")]


def alive(pids: list[int]) -> list[tuple[int, str]]:
    """Processes still running (an exited orphan may linger as a zombie until init reaps it: that is not running)."""
    running = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                running.append((pid, " ".join(process.cmdline()[:4])))
        except psutil.NoSuchProcess:
            pass
    return running


def wait_for(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


@pytest.mark.timeout(480)  # two whole-stack starts and a dozen CLI processes: over 300 s on a loaded 2-core machine
def test_dev_stack_starts_survives_a_restart_and_stops_cleanly():
    with server_state_dir("bud-stack-") as state:
        run_stack_scenario(state)


def run_stack_scenario(state: Path) -> None:
    env = stack_env(state)
    api = f"http://127.0.0.1:{env['BUD_API_PORT']}"
    try:
        started = bud(env, "dev", "up", "--detach")
        assert started.returncode == 0, started.stdout + started.stderr
        for part in ("postgres", "temporal", "s3", "clamd", "prometheus", "api", "worker-bud-control",
                     "worker-bud-optimizer", "gateway"):
            assert part in started.stdout
        assert f"http://127.0.0.1:{env['BUD_TEMPORAL_UI_PORT']}" in started.stdout
        assert f"Dashboard  {api}/ui" in started.stdout  # beside the API, gateway and Temporal UI lines
        assert f"Gateway    http://127.0.0.1:{env['BUD_GATEWAY_PORT']}/v1" in started.stdout

        token_file = state / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        # The state folder is private: others may pass through it (PostgreSQL's own user) but read nothing.
        assert stat.S_IMODE(state.stat().st_mode) == 0o711
        private = [state / "temporal.db", state / "secret-key", *sorted((state / "logs").glob("*.log"))]
        assert len(private) > 5
        assert {path.name: stat.S_IMODE(path.stat().st_mode) & 0o077 for path in private if path.exists()} == {
            path.name: 0 for path in private if path.exists()}
        assert (state / "temporal.db").exists()
        token = token_file.read_text().strip()
        assert token in started.stdout  # printed once, on the first start
        headers = {"Authorization": f"Bearer {token}"}

        assert httpx.get(f"{api}/readyz").status_code == 200
        dashboard = httpx.get(f"{api}/ui")
        assert dashboard.status_code == 200 and "text/html" in dashboard.headers["content-type"]
        assert httpx.get(f"http://127.0.0.1:{env['BUD_TEMPORAL_UI_PORT']}/").status_code == 200
        status = bud(env, "dev", "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == 9

        # The local cluster registers itself through the running worker.
        local = wait_for(lambda: next((c for c in httpx.get(f"{api}/api/clusters", headers=headers).json()
                                       if c["name"] == "local" and c["status"] == "READY"), None))
        # A newcomer's first model: upload with progress, registration, the scan followed to the end.
        model_dir = write_tiny_llama(state / "tiny-model")
        uploaded = bud(env, "models", "upload", str(model_dir.path), "--name", "tiny", "--license", "apache-2.0")
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        assert "AVAILABLE" in uploaded.stdout and "uploaded 6 file(s)" in uploaded.stdout
        again = bud(env, "models", "upload", str(model_dir.path), "--name", "tiny", "--version", "2")
        assert again.returncode == 0, again.stdout + again.stderr
        bad = bud(env, "models", "upload", str(state / "no-such-dir"), "--name", "x")
        assert bad.returncode != 0 and "does not exist" in (bad.stdout + bad.stderr)
        listed = bud(env, "models", "list", "--status", "AVAILABLE")
        assert listed.returncode == 0 and listed.stdout.count("tiny") == 2

        # `bud models show` by name (with --version when the name has several) or by id.
        shown = bud(env, "models", "show", "tiny", "--version", "2")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "AVAILABLE  tiny 2" in shown.stdout and '"files"' in shown.stdout
        model_id = shown.stdout.split("id=", 1)[1].split()[0]
        by_id = bud(env, "models", "show", model_id)
        assert by_id.returncode == 0 and "AVAILABLE  tiny 2" in by_id.stdout
        ambiguous = bud(env, "models", "show", "tiny")
        assert ambiguous.returncode == 1 and "'tiny' has versions 1, 2: choose one with --version" in ambiguous.stdout
        unknown = bud(env, "models", "show", "no-such-model")
        assert unknown.returncode == 1, unknown.stdout + unknown.stderr
        assert "no model named 'no-such-model' in this project" in unknown.stdout

        # Prometheus scrapes the API and the workers.
        prometheus = env["BUD_PROMETHEUS_URL"]
        wait_for(lambda: {t["labels"]["job"] for t in httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
                          if t["health"] == "up"} >= {"api", "workers", "gateway"}, timeout=30)

        # Restart: state survives (database, token, Temporal history); the token is not printed again.
        pids_before = recorded_pids(state)
        assert bud(env, "dev", "down").returncode == 0
        assert alive(pids_before) == []
        restarted = bud(env, "dev", "up", "--detach")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert token not in restarted.stdout
        again = httpx.get(f"{api}/api/clusters/{local['id']}", headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "READY"
        workflows = httpx.get(
            f"http://127.0.0.1:{env['BUD_TEMPORAL_UI_PORT']}/api/v1/namespaces/default/workflows/{local['workflow_id']}"
        )
        assert workflows.status_code == 200, workflows.text  # the Web UI still shows the registration's history
    finally:
        pids = recorded_pids(state) if (state / "pids").exists() else []
        bud(env, "dev", "down")
    assert alive(pids) == []


class ControlWorkerOnly(Stack):
    """The real stack's definitions, cut to the control worker (the rest is the scenario above)."""

    def definitions(self):
        return [proc for proc in super().definitions() if proc.name == f"worker-{self.settings.control_queue}"]


@pytest.mark.timeout(120)
def test_up_reports_a_crashed_worker_failed_though_its_metrics_port_answers(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
                        worker_metrics_base_port=free_port())
    stack = ControlWorkerOnly(settings)
    with socket.socket() as squatter:  # another program holds the worker's metrics port
        squatter.bind(("127.0.0.1", stack.worker_metrics_port(0)))
        squatter.listen()
        echoed: list[str] = []
        with pytest.raises(StartupError):
            stack.up(echoed.append)
    assert len(echoed) == 1 and "worker-bud-control" in echoed[0] and "FAILED" in echoed[0], echoed
    assert "exited" in echoed[0]
    assert stack.running_pid("worker-bud-control") is None
