"""Local replicas are real `python -m runtime` processes identified by pid and the token they were started with.

A replica slow to answer under load is not replaced, one that died is replaced exactly once, a wall-clock jump
changes nothing, and `bud dev down` leaves no replica of the state folder running, however often they were replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from clusters.local import (
    HEALTH_TIMEOUT_S,
    UNANSWERED_CHECKS,
    UNANSWERED_FOR_S,
    LocalBackend,
    Verdict,
    judge_replica,
)
from control.payloads.deployments import DeploymentSpec, Resources
from core.replica_identity import ENV_INDEX, ENV_RELEASE
from core.settings import Settings
from devstack.stack import Stack

pytestmark = pytest.mark.timeout(180)


def heartbeat(*_details: object) -> None:
    return None


def release_spec(replicas: int = 1) -> DeploymentSpec:
    endpoint_id = uuid.uuid4()
    return DeploymentSpec(endpoint_id=endpoint_id, release=f"ep-{endpoint_id.hex[:8]}", served_model_name="tiny",
                          model_id=uuid.uuid4(), model_uri="sim/tiny", replicas=replicas,
                          resources=Resources(gpu_type="nvidia-h100-80gb", gpu_count=1))


def replica_processes(release: str, index: int | None = None) -> list[int]:
    """Pids of the live runtime processes started for `release` (slot `index`), found by their environment."""
    found = []
    for process in psutil.process_iter():
        try:
            env = process.environ()
            if env.get(ENV_RELEASE) == release and process.status() != psutil.STATUS_ZOMBIE:
                if index is None or env.get(ENV_INDEX) == str(index):
                    found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return sorted(found)


def record_of(backend: LocalBackend, spec: DeploymentSpec, index: int) -> dict:
    return json.loads((backend.replicas_dir / spec.release / f"replica-{index}.json").read_text())


def rewrite_record(backend: LocalBackend, spec: DeploymentSpec, index: int, **fields: object) -> None:
    path = backend.replicas_dir / spec.release / f"replica-{index}.json"
    path.write_text(json.dumps({**record_of(backend, spec, index), **fields}))


def kill_and_wait(pid: int) -> None:
    """SIGKILL, as a crash would, and wait until the process is gone (or only a zombie)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still runs after SIGKILL")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path)
    yield backend
    backend.stop_all_replicas()


async def deployed(backend: LocalBackend, spec: DeploymentSpec) -> None:
    await backend.apply(spec, heartbeat)
    state = await backend.wait_ready(spec, 60, heartbeat)
    assert state.ready_replicas == spec.replicas


async def reconcile(backend: LocalBackend, spec: DeploymentSpec, passes: int = 1) -> None:
    for _ in range(passes):
        await asyncio.to_thread(backend.reconcile, spec.release)


async def test_a_replica_slow_to_answer_is_kept_until_it_stays_silent_long_enough(backend: LocalBackend):
    spec = release_spec()
    await deployed(backend, spec)
    first = record_of(backend, spec, 0)
    faults = f"http://127.0.0.1:{first['port']}/sim/faults"

    # Slow, but answering within the check's patience: nothing is counted against it.
    httpx.post(faults, json={"health_delay_s": 2}).raise_for_status()
    await reconcile(backend, spec, passes=2)
    assert record_of(backend, spec, 0)["unanswered_checks"] == 0

    # Past the check's timeout, UNANSWERED_CHECKS times in a row, but for less than UNANSWERED_FOR_S: still kept.
    httpx.post(faults, json={"health_delay_s": HEALTH_TIMEOUT_S + 3}).raise_for_status()
    await reconcile(backend, spec, passes=UNANSWERED_CHECKS)
    kept = record_of(backend, spec, 0)
    assert kept["unanswered_checks"] == UNANSWERED_CHECKS
    assert (kept["pid"], kept["token"]) == (first["pid"], first["token"])
    assert replica_processes(spec.release) == [first["pid"]]

    # Silent since longer than UNANSWERED_FOR_S (its first miss moved back on the monotonic clock): the old process
    # stops before its successor starts, which therefore gets the same port back.
    rewrite_record(backend, spec, 0, unanswered_since=time.monotonic() - UNANSWERED_FOR_S - 1)
    await reconcile(backend, spec)
    successor = record_of(backend, spec, 0)
    assert successor["pid"] != first["pid"] and successor["port"] == first["port"]
    assert replica_processes(spec.release) == [successor["pid"]]


async def test_a_replica_that_died_is_replaced_exactly_once(backend: LocalBackend):
    spec = release_spec(replicas=2)
    await deployed(backend, spec)
    dead, other = record_of(backend, spec, 0), record_of(backend, spec, 1)
    kill_and_wait(dead["pid"])

    await reconcile(backend, spec, passes=3)
    replacement = record_of(backend, spec, 0)
    assert replacement["pid"] != dead["pid"] and replacement["token"] != dead["token"]
    assert replacement["restarts"] == 1 and replacement["port"] == dead["port"]
    assert replica_processes(spec.release, 0) == [replacement["pid"]]
    assert not psutil.pid_exists(dead["pid"]) or psutil.Process(dead["pid"]).status() == psutil.STATUS_ZOMBIE
    assert record_of(backend, spec, 1)["pid"] == other["pid"]  # the live one was left alone
    state = await backend.wait_ready(spec, 60, heartbeat)
    assert state.ready_replicas == 2


def test_the_liveness_decision_counts_misses_on_the_monotonic_clock_only():
    answered_before = {"pid": 1, "token": "t", "port": 1, "index": 0, "restarts": 0, "answered": True}
    now = 5_000.0  # a fake monotonic clock: the decision has no wall-clock input at all

    verdict, record = judge_replica(answered_before, running=True, answered=False, now=now)
    for step in range(1, UNANSWERED_CHECKS + 2):  # many misses in quick succession are not enough
        assert verdict is Verdict.ALIVE
        verdict, record = judge_replica(record, running=True, answered=False, now=now + step)
    assert verdict is Verdict.ALIVE and record["unanswered_checks"] == UNANSWERED_CHECKS + 2
    verdict, record = judge_replica(record, running=True, answered=False, now=now + UNANSWERED_FOR_S)
    assert verdict is Verdict.HUNG

    # One answer in between starts the count again.
    _, counted = judge_replica(answered_before, running=True, answered=False, now=now)
    _, reset = judge_replica(counted, running=True, answered=True, now=now + 1)
    verdict, _ = judge_replica(reset, running=True, answered=False, now=now + UNANSWERED_FOR_S + 1)
    assert verdict is Verdict.ALIVE

    # Still loading (never answered): not the supervisor's to judge, however long. Gone: replaced.
    loading = {**answered_before, "answered": False}
    assert judge_replica(loading, running=True, answered=False, now=now + 10 * UNANSWERED_FOR_S)[0] is Verdict.ALIVE
    assert judge_replica(answered_before, running=False, answered=False, now=now)[0] is Verdict.EXITED


async def test_a_wall_clock_jump_does_not_make_replicas_look_dead(backend: LocalBackend, monkeypatch):
    spec = release_spec(replicas=2)
    await deployed(backend, spec)
    before = [record_of(backend, spec, index) for index in range(2)]
    day = 86_400
    rewrite_record(backend, spec, 0, started_at=time.time() - day, started_monotonic=time.monotonic() - day)
    rewrite_record(backend, spec, 1, started_at=time.time() + day, started_monotonic=time.monotonic() + day)
    real_time = time.time
    for jump in (day, -day):  # the clock jumps forward a day, then back
        monkeypatch.setattr(time, "time", lambda jump=jump: real_time() + jump)
        await reconcile(backend, spec, passes=2)
    monkeypatch.setattr(time, "time", real_time)
    assert [record_of(backend, spec, index)["pid"] for index in range(2)] == [r["pid"] for r in before]
    assert replica_processes(spec.release) == sorted(r["pid"] for r in before)


async def test_dev_down_stops_every_replica_ever_started(tmp_path: Path, backend: LocalBackend):
    spec = release_spec(replicas=2)
    await deployed(backend, spec)
    for _ in range(3):  # slot 0 crashes and is replaced three times
        kill_and_wait(record_of(backend, spec, 0)["pid"])
        await reconcile(backend, spec)
    assert len(replica_processes(spec.release, 0)) == 1

    # A record lost (a worker killed between starting slot 1's process and recording it): the process is adopted.
    slot_1 = record_of(backend, spec, 1)["pid"]
    (backend.replicas_dir / spec.release / "replica-1.json").unlink()
    await reconcile(backend, spec)
    assert record_of(backend, spec, 1)["pid"] == slot_1 and replica_processes(spec.release, 1) == [slot_1]

    # A second process for slot 1 started over a live one (what a supervisor fooled by a clock jump did): the
    # record now names the new one only.
    with backend._locked(spec.release) as directory:
        backend._start_replica(directory, spec, 1, restarts=0)
    assert len(replica_processes(spec.release)) == 3

    echoed: list[str] = []
    Stack(Settings(state_dir=tmp_path)).down(echoed.append)
    assert replica_processes(spec.release) == []
    assert any("local replicas" in line and "3 stopped" in line for line in echoed), echoed
