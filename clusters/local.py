"""The local backend: each replica is a process on this machine (`vllm serve` with a GPU, else the simulated runtime).

Desired state lives on disk (STATE/replicas/<release>/spec.json) and so do the replicas (replica-<i>.json: pid,
process start time, port), so a restarted worker finds its replicas again instead of starting duplicates, and a
supervisor loop in every control worker restarts crashed replicas. A per-release file lock keeps two workers from
reconciling the same release at once. Prometheus discovers replicas from STATE/prometheus/targets/<release>.json.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from clusters.base import DeploymentFailed, Heartbeat
from core.logging import get_logger
from control.payloads.clusters import ClusterFacts, ClusterSpec
from control.payloads.deployments import DeploymentSpec, DeploymentState, ReplicaState
from core.processes import ManagedProcess, free_port, http_ok

log = get_logger(__name__)
MAX_RESTARTS = 3  # a replica that crashes more often than this while deploying fails the deployment
STABLE_AFTER_S = 60  # a replica that ran this long before dying counts as healthy: its restart count resets
LOAD_FAILURE = re.compile(r"model load failed \[(?P<reason>[a-z_]+)\]: (?P<message>.*)")
SEED_EXPLANATIONS = {  # the seed's Troubleshooting > Model Load Failure
    "path_not_accessible": "model path is not accessible",
    "format_not_supported": "model format is not supported by the runtime",
    "insufficient_gpu_memory": "not enough GPU memory for the model",
    "load_error": "the runtime could not load the model",
}
# Popen objects of the replicas this process started, so their exit is reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def has_real_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and shutil.which("vllm") is not None


def _alive(record: dict) -> bool:
    child = _CHILDREN.get(record["pid"])
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(record["pid"], None)
        return False
    try:
        process = psutil.Process(record["pid"])
        return abs(process.create_time() - record["create_time"]) < 1 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop_pid(record: dict, timeout_s: float = 10) -> None:
    if not _alive(record):
        return
    try:
        os.kill(record["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(record):
            time.sleep(0.05)
        if _alive(record):
            os.kill(record["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    child = _CHILDREN.pop(record["pid"], None)
    if child is not None:
        child.wait(timeout=5)


@dataclass(frozen=True)
class ReplicaMoved:
    """A restarted replica could not get its old port back (something else took it): routes must follow it."""

    release: str
    endpoint_id: str
    old_url: str
    new_url: str


# Spec fields that do not change what a replica process runs (the count, and who decides the count).
_NOT_PROCESS_FACTS = ("replicas", "autoscaling")


def _process_facts(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in _NOT_PROCESS_FACTS}


class LocalBackend:
    def __init__(self, state_dir: Path, gpu_memory_gb: dict[str, float] | None = None):
        self.state_dir = state_dir
        self.replicas_dir = state_dir / "replicas"
        self.targets_dir = state_dir / "prometheus" / "targets"
        self.gpu_memory_gb = gpu_memory_gb or {}

    # -------------------------------------------------------------------------------------------- commands
    def runtime_argv(self, model: str, port: int, extra: list[str] | None = None) -> list[str]:
        """`vllm serve` when a GPU and vLLM are here, else the simulated runtime with the same flags."""
        head = ["vllm", "serve"] if has_real_gpu() else [sys.executable, "-m", "runtime", "serve"]
        return [*head, model, "--host", "127.0.0.1", "--port", str(port), *(extra or [])]

    def replica_argv(self, spec: DeploymentSpec, port: int) -> list[str]:
        config = spec.config
        extra = ["--served-model-name", spec.served_model_name,
                 "--tensor-parallel-size", str(config.tensor_parallel_size),
                 "--pipeline-parallel-size", str(config.pipeline_parallel_size),
                 "--max-num-seqs", str(config.max_num_seqs),
                 "--gpu-memory-utilization", str(config.gpu_memory_utilization)]
        if config.max_model_len:
            extra += ["--max-model-len", str(config.max_model_len)]
        if config.max_num_batched_tokens:
            extra += ["--max-num-batched-tokens", str(config.max_num_batched_tokens)]
        if not has_real_gpu():
            timing = spec.timing
            if timing:
                extra += ["--sim-ttft-ms", f"{timing.ttft_ms:.3f}", "--sim-tpot-ms", f"{timing.tpot_ms:.3f}",
                          "--sim-load-delay-s", str(timing.load_delay_s)]
            memory = self.gpu_memory_gb.get(spec.resources.gpu_type)
            if memory:
                extra += ["--sim-gpu-memory-gb", str(memory)]
        return self.runtime_argv(spec.model_uri, port, extra)

    # -------------------------------------------------------------------------------------------- files
    def _release_dir(self, release: str) -> Path:
        return self.replicas_dir / release

    @contextmanager
    def _locked(self, release: str):
        directory = self._release_dir(release)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @asynccontextmanager
    async def _locked_async(self, release: str, retry_s: float = 0.05):
        """The same lock for coroutines that heartbeat while holding it: tried without blocking and retried after a
        sleep, so the worker's event loop (heartbeats, its other activities) runs on while someone else holds it."""
        directory = self._release_dir(release)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(retry_s)
            try:
                yield directory
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def _write(path: Path, document: dict) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(path)

    # -------------------------------------------------------------------------------------------- reconcile
    def _start_replica(self, directory: Path, spec: DeploymentSpec, index: int, restarts: int,
                       port: int | None = None) -> dict:
        # A restarted replica keeps its port, so the routes the gateway holds stay valid.
        port = port if port is not None and port_is_free(port) else free_port()
        log_path = directory / f"replica-{index}.log"
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(self.replica_argv(spec, port), stdout=log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _CHILDREN[child.pid] = child
        record = {"pid": child.pid, "create_time": psutil.Process(child.pid).create_time(), "port": port,
                  "index": index, "restarts": restarts, "log": str(log_path), "started_at": time.time()}
        self._write(directory / f"replica-{index}.json", record)
        log.info("replica started", release=spec.release, replica=index, port=port, pid=child.pid)
        return record

    def reconcile(self, release: str) -> list[ReplicaMoved]:
        """Make the processes match spec.json: start missing replicas, restart dead ones, stop extra ones.
        Returns the restarted replicas that had to take a new port."""
        moved: list[ReplicaMoved] = []
        with self._locked(release) as directory:
            desired = self._read(directory / "spec.json")
            if desired is None:
                return moved
            spec = DeploymentSpec.model_validate(desired)
            for index in range(spec.replicas):
                record = self._read(directory / f"replica-{index}.json")
                if record is None:
                    self._start_replica(directory, spec, index, restarts=0)
                elif not _alive(record):
                    ran_for = time.time() - record["started_at"]
                    restarts = 0 if ran_for > STABLE_AFTER_S else record["restarts"] + 1
                    if restarts > MAX_RESTARTS and ran_for < min(2 ** restarts, 300):
                        continue  # crash loop: back off (wait_ready reports it; later passes retry slowly)
                    log.warning("replica died; restarting", release=release, replica=index, pid=record["pid"])
                    restarted = self._start_replica(directory, spec, index, restarts=restarts, port=record["port"])
                    if restarted["port"] != record["port"]:
                        moved.append(ReplicaMoved(release, str(spec.endpoint_id), f"http://127.0.0.1:{record['port']}",
                                                  f"http://127.0.0.1:{restarted['port']}"))
            for path in directory.glob("replica-*.json"):
                record = self._read(path)
                if record and record["index"] >= spec.replicas:
                    _stop_pid(record)
                    path.unlink(missing_ok=True)
            self._write_targets(release, directory)
        return moved

    def _write_targets(self, release: str, directory: Path) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        ports = [r["port"] for r in (self._read(p) for p in sorted(directory.glob("replica-*.json"))) if r]
        document = [{"targets": [f"127.0.0.1:{port}" for port in ports], "labels": {"release": release}}]
        self._write(self.targets_dir / f"{release}.json", document)

    def reconcile_all(self) -> list[ReplicaMoved]:
        """The supervisor's pass over every release (a restarted worker finds running replicas here)."""
        moved: list[ReplicaMoved] = []
        if not self.replicas_dir.exists():
            return moved
        for directory in self.replicas_dir.iterdir():
            if (directory / "spec.json").exists():
                try:
                    moved += self.reconcile(directory.name)
                except Exception as error:  # one broken release must not stop the supervisor
                    log.error("reconcile failed", release=directory.name, error=str(error))
        return moved

    def stop_all_replicas(self) -> int:
        """Stop every replica process but keep each release's desired state: the next supervisor pass (the next
        `bud dev up`) starts them again. Returns how many were stopped."""
        stopped = 0
        if not self.replicas_dir.exists():
            return 0
        for directory in self.replicas_dir.iterdir():
            if not directory.is_dir():
                continue
            with self._locked(directory.name):
                for path in directory.glob("replica-*.json"):
                    record = self._read(path)
                    if record and _alive(record):
                        _stop_pid(record)  # the record stays: the restart reuses its port
                        stopped += 1
        return stopped

    async def supervise(
        self, interval_s: float = 2.0, on_moved: Callable[[list[ReplicaMoved]], Awaitable[None]] | None = None
    ) -> None:
        """Run forever in a worker: restart crashed replicas of deployed releases; `on_moved` hears of replicas that
        came back on another port (the worker points the routes at them)."""
        unreported: list[ReplicaMoved] = []
        while True:
            unreported += await asyncio.to_thread(self.reconcile_all)
            if unreported and on_moved is not None:
                try:
                    await on_moved(unreported)
                    unreported = []
                except Exception as error:  # kept and retried on the next pass (the database may be restarting)
                    log.error("republishing moved replicas failed", error=str(error))
            await asyncio.sleep(interval_s)

    # -------------------------------------------------------------------------------------------- backend API
    async def probe(self, spec: ClusterSpec, heartbeat: Heartbeat) -> ClusterFacts:
        """Prove a replica can start here: launch one runtime, wait for /health, stop it."""
        self.replicas_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        process = ManagedProcess(
            name="runtime-smoke",
            argv=self.runtime_argv("bud-smoke-test", port, ["--max-num-seqs", "1"]),
            log_path=self.replicas_dir / "smoke.log",
            healthy=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
            startup_timeout_s=60,
            die_with_parent=True,  # a probe killed with its worker must not leave a runtime behind
        )
        started = time.monotonic()
        process.start()
        try:
            await asyncio.to_thread(process.wait_healthy)
            elapsed_ms = (time.monotonic() - started) * 1000
            heartbeat()
        finally:
            await asyncio.to_thread(process.stop)
        simulated = not has_real_gpu()
        notes = ["no GPU on this host: replicas run the simulated vLLM-compatible runtime"] if simulated else []
        return ClusterFacts(simulated_gpus=simulated, nodes=1, observed_gpus={p.gpu_type: p.count for p in spec.gpus},
                            runtime_smoke_ms=round(elapsed_ms, 1), notes=notes)

    def _set_desired(self, spec: DeploymentSpec) -> None:
        """Write spec.json under the release lock (blocking: waits for the lock, stops replaced replicas)."""
        with self._locked(spec.release) as directory:
            current = self._read(directory / "spec.json")
            desired = spec.model_dump(mode="json")
            if current is not None and _process_facts(current) != _process_facts(desired):
                # Anything but the replica count changed: replace the replicas (a rolling update is the
                # blue-green path's job; here the release is new or being reconfigured in place).
                for path in directory.glob("replica-*.json"):
                    record = self._read(path)
                    if record:
                        _stop_pid(record)
                    path.unlink(missing_ok=True)
            self._write(directory / "spec.json", desired)

    async def apply(self, spec: DeploymentSpec, heartbeat: Heartbeat) -> DeploymentState:
        # In a thread, whole: the event loop runs on while it waits for the lock, and a cancelled activity cannot
        # leave the lock released halfway through replacing the replicas.
        await asyncio.to_thread(self._set_desired, spec)
        await asyncio.to_thread(self.reconcile, spec.release)
        heartbeat()
        return await self.state(spec)

    def replica_cpu_percent(self, release: str, interval_s: float = 1.0) -> list[float]:
        """CPU use of each live replica of `release` over `interval_s`, in percent of one core (blocking)."""
        processes = []
        for path in sorted(self._release_dir(release).glob("replica-*.json")):
            record = self._read(path)
            if record and _alive(record):
                try:
                    process = psutil.Process(record["pid"])
                    process.cpu_percent(None)  # starts the measurement window
                    processes.append(process)
                except psutil.NoSuchProcess:
                    continue
        time.sleep(interval_s)
        usage = []
        for process in processes:
            try:
                usage.append(process.cpu_percent(None))
            except psutil.NoSuchProcess:
                continue
        return usage

    async def _replica_states(self, spec: DeploymentSpec) -> list[ReplicaState]:
        directory = self._release_dir(spec.release)
        states = []
        async with httpx.AsyncClient(timeout=2) as client:
            for index in range(spec.replicas):
                record = self._read(directory / f"replica-{index}.json")
                name = f"{spec.release}-{index}"
                if record is None:
                    states.append(ReplicaState(name=name, ready=False, phase="Pending"))
                    continue
                url = f"http://127.0.0.1:{record['port']}"
                if not _alive(record):
                    states.append(ReplicaState(name=name, ready=False, url=url, phase="Exited",
                                               reason=self._exit_reason(Path(record["log"]))))
                    continue
                try:
                    ready = (await client.get(f"{url}/health")).status_code == 200
                except httpx.HTTPError:
                    ready = False
                states.append(ReplicaState(name=name, ready=ready, url=url, node="localhost",
                                           phase="Running" if ready else "Starting"))
        return states

    @staticmethod
    def _exit_reason(log_path: Path) -> str:
        try:
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
        except FileNotFoundError:
            return "exited"
        for line in reversed(tail):
            match = LOAD_FAILURE.search(line)
            if match:
                explanation = SEED_EXPLANATIONS.get(match["reason"], match["reason"])
                return f"model failed to load: {explanation} ({match['message'].strip()})"
        return "exited: " + (tail[-1].strip() if tail else "no output")

    async def state(self, spec: DeploymentSpec) -> DeploymentState:
        exists = (self._release_dir(spec.release) / "spec.json").exists()
        replicas = await self._replica_states(spec) if exists else []
        reasons = sorted({r.reason for r in replicas if r.reason})
        return DeploymentState(release=spec.release, desired_replicas=spec.replicas,
                               ready_replicas=sum(r.ready for r in replicas), replicas=replicas,
                               pending_reasons=reasons, exists=exists)

    async def wait_ready(self, spec: DeploymentSpec, timeout_s: float, heartbeat: Heartbeat) -> DeploymentState:
        deadline = time.monotonic() + timeout_s
        while True:
            await asyncio.to_thread(self.reconcile, spec.release)
            state = await self.state(spec)
            heartbeat({"ready": state.ready_replicas, "desired": state.desired_replicas})
            if state.ready:
                return state
            for replica in state.replicas:
                record = self._read(self._release_dir(spec.release) / f"replica-{replica.name.rsplit('-', 1)[1]}.json")
                load_failed = replica.reason and replica.reason.startswith("model failed to load")
                if replica.phase == "Exited" and (load_failed or (record and record["restarts"] >= MAX_RESTARTS)):
                    raise DeploymentFailed(f"replica {replica.name} {replica.reason}")
            if time.monotonic() > deadline:
                waiting = [r.name for r in state.replicas if not r.ready]
                raise DeploymentFailed(f"replicas {', '.join(waiting)} not ready after {timeout_s:.0f}s "
                                       "(health check failing)")
            await asyncio.sleep(0.2)

    async def delete(self, spec: DeploymentSpec, heartbeat: Heartbeat) -> None:
        directory = self._release_dir(spec.release)
        if not directory.exists():
            return
        async with self._locked_async(spec.release):
            (directory / "spec.json").unlink(missing_ok=True)  # first: the supervisor must not restart anything
            for path in directory.glob("replica-*.json"):
                record = self._read(path)
                if record:
                    await asyncio.to_thread(_stop_pid, record)
                path.unlink(missing_ok=True)
                heartbeat()
        (self.targets_dir / f"{spec.release}.json").unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("release deleted", release=spec.release)
