"""The local backend waits for a release's lock (held by the supervisor or another worker) without stopping the
worker's event loop: its other activities and its heartbeats run on meanwhile."""

from __future__ import annotations

import asyncio
import fcntl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clusters.local import LocalBackend
from control.payloads.deployments import DeploymentSpec, Resources

HOLD_S = 1.5


def release_spec() -> DeploymentSpec:
    endpoint_id = uuid.uuid4()
    return DeploymentSpec(endpoint_id=endpoint_id, release=f"ep-{endpoint_id.hex[:8]}", served_model_name="tiny",
                          model_id=uuid.uuid4(), model_uri="/nonexistent/tiny", replicas=0,
                          resources=Resources(gpu_type="nvidia-h100-80gb", gpu_count=1))


@contextmanager
def lock_held_elsewhere(lock_path: Path, seconds: float) -> Iterator[None]:
    """Another holder (as the supervisor's reconcile pass would be) takes the release lock and keeps it `seconds`."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    taken = threading.Event()

    def hold() -> None:
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken.set()
            threading.Event().wait(seconds)
            fcntl.flock(lock, fcntl.LOCK_UN)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(5)
    try:
        yield
    finally:
        holder.join(seconds + 5)


async def ticks_while(task: asyncio.Task, seconds: float, tick_s: float = 0.02) -> int:
    """How often a ticker coroutine ran during `seconds` of wall time, stopping early if `task` finishes."""
    ticks = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not task.done():
        await asyncio.sleep(tick_s)
        ticks += 1
    return ticks


@pytest.mark.parametrize("operation", ["apply", "delete"])
async def test_waiting_on_the_release_lock_keeps_the_event_loop_running(tmp_path: Path, operation: str):
    backend = LocalBackend(tmp_path)
    spec = release_spec()

    def heartbeat(*_details: object) -> None:
        return None

    release_dir = tmp_path / "replicas" / spec.release
    if operation == "delete":
        await backend.apply(spec, heartbeat)
        assert (release_dir / "spec.json").exists()

    with lock_held_elsewhere(release_dir / ".lock", HOLD_S):
        waiting = asyncio.create_task(getattr(backend, operation)(spec, heartbeat))
        ticks = await ticks_while(waiting, HOLD_S / 2)
        # A loop blocked in flock would run the ticker not at all until the holder lets go (and apply would be done).
        assert not waiting.done(), f"{operation} finished while another holder had the lock"
        assert ticks >= (HOLD_S / 2) / 0.02 / 3, f"the ticker ran {ticks} times in {HOLD_S / 2}s"
        assert (release_dir / "spec.json").exists() == (operation == "delete")  # nothing changed yet
        result = await asyncio.wait_for(waiting, timeout=HOLD_S + 10)

    if operation == "apply":
        assert result.exists and result.desired_replicas == 0
        assert (release_dir / "spec.json").exists()
    else:
        assert not release_dir.exists()


async def test_the_registration_probe_heartbeats_while_a_slow_runtime_starts(tmp_path, monkeypatch):
    # A runtime that takes 7 s to answer (a busy host) outlasts nothing if the probe beats while it waits:
    # RegisterCluster's heartbeat timeout is 10 s, and before this the probe beat only once the runtime answered.
    import sys
    import time

    from control.payloads.clusters import ClusterSpec

    backend = LocalBackend(tmp_path)
    slow_server = ("import http.server, sys, time; time.sleep(7); "
                   "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)"
                   ".serve_forever()")
    monkeypatch.setattr(backend, "runtime_argv",
                        lambda model, port, extra=None: [sys.executable, "-c", slow_server, str(port)])
    beats: list[float] = []
    started = time.monotonic()
    facts = await backend.probe(ClusterSpec(name="slow", kind="local", gpus=[{"gpu_type": "nvidia-l4", "count": 1}]),
                                heartbeat=lambda: beats.append(time.monotonic() - started))
    assert facts.runtime_smoke_ms >= 7000
    gaps = [later - earlier for earlier, later in zip([0.0, *beats], beats)]
    assert len(beats) >= 4 and max(gaps) < 5, beats  # never 5 s without a beat, let alone 10
