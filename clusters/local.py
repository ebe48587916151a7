"""The local backend: each replica is a process on this machine (`vllm serve` with a GPU, else the simulated runtime).

Desired state lives on disk (STATE/replicas/<release>/spec.json) and so do the replicas (replica-<i>.json: pid,
identity token, port), so a restarted worker finds its replicas again instead of starting duplicates, and a
supervisor loop in every control worker restarts crashed replicas. Every start is also appended to starts.jsonl, so
stopping a release or the whole stack reaches every process ever started, replaced ones included. A per-release file
lock keeps two workers from reconciling the same release at once. Prometheus discovers replicas from
STATE/prometheus/targets/<release>.json.

A replica is its pid *and* the random token it was started with (core/replica_identity.py): the token is read back
from the process's environment, so a reused pid is never mistaken for (or killed as) a replica. Liveness never looks
at a wall clock: a replica whose process is gone is replaced at once; one whose process runs but stops answering
/health is replaced only after UNANSWERED_CHECKS failed checks spread over UNANSWERED_FOR_S (time.monotonic), and
then its process is stopped before the replacement starts, so a slot never has two processes.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
import psutil

from clusters.base import DeploymentFailed, Heartbeat
from core.logging import get_logger
from control.payloads.clusters import ClusterFacts, ClusterSpec
from control.payloads.deployments import DeploymentSpec, DeploymentState, ReplicaState
from core.processes import ManagedProcess, free_port, http_ok
from core.replica_identity import ENV_TOKEN, ReplicaIdentity

log = get_logger(__name__)
MAX_RESTARTS = 3  # a replica that crashes more often than this while deploying fails the deployment
STABLE_AFTER_S = 60  # a replica that ran this long before dying counts as healthy: its restart count resets
HEALTH_TIMEOUT_S = 5.0  # a replica busy with a burst of streams still answers /health within this
UNANSWERED_CHECKS = 3  # a replica that answered before counts as hung only after this many failed checks in a row...
UNANSWERED_FOR_S = 30.0  # ...spread over at least this many seconds
PROBE_HEARTBEAT_EVERY_S = 2.0  # the registration probe beats this often while its runtime starts (timeout: 10 s)
STARTS_FILE = "starts.jsonl"
LOAD_FAILURE = re.compile(r"model load failed \[(?P<reason>[a-z_]+)\]: (?P<message>.*)")
LOAD_FAILURE_EXPLANATIONS = {  # what a user can do about each way a model fails to load
    "path_not_accessible": "model path is not accessible",
    "format_not_supported": "model format is not supported by the runtime",
    "insufficient_gpu_memory": "not enough GPU memory for the model",
    "load_error": "the runtime could not load the model",
}
# Popen objects of the replicas this process started, so their exit is reaped (no zombies).
_CHILDREN: dict[int, subprocess.Popen] = {}


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind (uvicorn sets it too): a stopped replica's lingering connections do not hold its port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def has_real_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and shutil.which("vllm") is not None


def _replica_process(record: dict) -> psutil.Process | None:
    """The process of `record` if its pid is still that replica: it carries the record's token in its environment
    (a pid the kernel gave to another program does not). Reaps our own children that exited."""
    pid = record["pid"]
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if "token" not in record:  # recorded before replicas had tokens: the command line must still match
            cmdline = process.cmdline()
            return process if "serve" in cmdline and str(record["port"]) in cmdline else None
        return process if process.environ().get(ENV_TOKEN) == record["token"] else None
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or another user's: not a replica we started
        return None


def _is_running(record: dict) -> bool:
    return _replica_process(record) is not None


def _stop_replica(record: dict, timeout_s: float = 10) -> bool:
    """SIGTERM, then SIGKILL after timeout_s, the process of `record` if it still is that replica. True if it was."""
    process = _replica_process(record)
    if process is None:
        return False
    try:
        process.terminate()
        try:
            process.wait(timeout_s)  # reaps it when it is our child
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(5)
    except psutil.NoSuchProcess:
        pass
    _CHILDREN.pop(record["pid"], None)
    return True


def _answer_is_from(response: httpx.Response, record: dict) -> bool:
    """Whether an answer on the replica's port comes from that replica: the simulated runtime names its token;
    vLLM's empty answer is taken as it is (the pid check has already proved the process)."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return True
    try:
        token = response.json().get("token")
    except (ValueError, AttributeError):
        return True
    return token is None or token == record.get("token")


def _answers_health(record: dict) -> bool:
    """Whether the replica answers GET /health as itself, in any status (503 while loading still proves it is there)."""
    try:
        response = httpx.get(f"http://127.0.0.1:{record['port']}/health", timeout=HEALTH_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return _answer_is_from(response, record)


class Verdict(StrEnum):
    ALIVE = "alive"
    EXITED = "exited"  # its process is gone: replace it
    HUNG = "hung"  # its process runs but stopped answering: stop it, then replace it


def judge_replica(record: dict, running: bool, answered: bool, now: float) -> tuple[Verdict, dict]:
    """One supervisor check of a replica: the verdict, and the record with the check counted.

    `now` is time.monotonic(); nothing here reads a wall clock, so a clock jump cannot make a replica look dead.
    A replica that never answered yet is loading (wait_ready's deadline judges that, not the supervisor)."""
    if not running:
        return Verdict.EXITED, record
    if answered:
        return Verdict.ALIVE, {**record, "answered": True, "unanswered_checks": 0, "unanswered_since": None}
    if not record.get("answered"):
        return Verdict.ALIVE, record
    since = record.get("unanswered_since")
    if since is None or since > now:  # first miss (or a monotonic reading from before a reboot)
        since = now
    checks = record.get("unanswered_checks", 0) + 1
    counted = {**record, "unanswered_checks": checks, "unanswered_since": since}
    hung = checks >= UNANSWERED_CHECKS and now - since >= UNANSWERED_FOR_S
    return (Verdict.HUNG if hung else Verdict.ALIVE), counted


@dataclass(frozen=True)
class ReplicaMoved:
    """A restarted replica could not get its old port back (something else took it): routes must follow it."""

    release: str
    endpoint_id: str
    old_url: str
    new_url: str


# Spec fields that do not change what a replica process runs (the count, and who decides the count).
_NOT_PROCESS_FACTS = ("replicas", "autoscaling", "drain_timeout_s")


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
                          "--sim-batch-tpot-factor", f"{timing.batch_tpot_factor:.4f}",
                          "--sim-load-delay-s", str(timing.load_delay_s)]
            if spec.drain_timeout_s:  # on SIGTERM the runtime finishes in-flight requests for this long
                extra += ["--sim-drain-timeout-s", f"{spec.drain_timeout_s:g}"]
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
    def _starts(self, directory: Path) -> list[dict]:
        try:
            lines = (directory / STARTS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        starts = []
        for line in lines:
            try:
                starts.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash while appending
        return starts

    def _keep_starts(self, directory: Path, starts: list[dict]) -> None:
        tmp = directory / f"{STARTS_FILE}.tmp"
        tmp.write_text("".join(json.dumps(start) + "\n" for start in starts))
        tmp.replace(directory / STARTS_FILE)

    def _every_start(self, directory: Path) -> list[dict]:
        """The current replica records and every start recorded before them, each process once."""
        seen: dict[tuple[int, str | None], dict] = {}
        records = [self._read(path) for path in sorted(directory.glob("replica-*.json"))]
        for record in [*(r for r in records if r), *self._starts(directory)]:
            seen.setdefault((record["pid"], record.get("token")), record)
        return list(seen.values())

    def _stop_every_start(self, directory: Path) -> int:
        """Stop every process ever started for this release that still runs; forget the finished starts."""
        stopped = sum(_stop_replica(start) for start in self._every_start(directory))
        self._keep_starts(directory, [])
        return stopped

    def _start_replica(self, directory: Path, spec: DeploymentSpec, index: int, restarts: int,
                       port: int | None = None) -> dict:
        # A restarted replica keeps its port, so the routes the gateway holds stay valid.
        port = port if port is not None and port_is_free(port) else free_port()
        log_path = directory / f"replica-{index}.log"
        identity = ReplicaIdentity.new(spec.release, index)
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(self.replica_argv(spec, port), stdout=log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **identity.env()})
        _CHILDREN[child.pid] = child
        start = {"pid": child.pid, "token": identity.token, "index": index, "port": port}
        with open(directory / STARTS_FILE, "a") as starts:
            starts.write(json.dumps(start) + "\n")
        # started_at is for people reading the file; every decision uses started_monotonic.
        record = {**start, "restarts": restarts, "log": str(log_path), "started_at": time.time(),
                  "started_monotonic": time.monotonic()}
        self._write(directory / f"replica-{index}.json", record)
        log.info("replica started", release=spec.release, replica=index, port=port, pid=child.pid)
        return record

    def _settle_unrecorded(self, directory: Path, spec: DeploymentSpec, records: dict[int, dict | None]) -> None:
        """Processes in starts.jsonl that no replica record points at (a worker died between starting one and
        recording it, or an older supervisor replaced a live one): one whose slot has no running replica becomes that
        slot's replica; any other is a duplicate and stops. Finished starts are forgotten."""
        current = {(r["pid"], r.get("token")) for r in records.values() if r}
        current |= {(r["pid"], r.get("token")) for r in map(self._read, directory.glob("replica-*.json")) if r}
        starts = self._starts(directory)
        kept = []
        for start in starts:
            key = (start["pid"], start.get("token"))
            if key in current:
                kept.append(start)
                continue
            if not _is_running(start):
                continue
            index = start["index"]
            record = records.get(index)
            if index < spec.replicas and (record is None or not _is_running(record)):
                log.warning("adopting an unrecorded replica", release=spec.release, replica=index, pid=start["pid"])
                adopted = {**start, "restarts": 0, "log": str(directory / f"replica-{index}.log"),
                           "started_at": time.time(), "started_monotonic": time.monotonic()}
                self._write(directory / f"replica-{index}.json", adopted)
                records[index] = adopted
                kept.append(start)
            else:
                log.warning("stopping a duplicate replica", release=spec.release, replica=index, pid=start["pid"])
                _stop_replica(start)
        if kept != starts:
            self._keep_starts(directory, kept)

    def _check(self, record: dict) -> tuple[bool, bool]:
        running = _is_running(record)
        return running, running and _answers_health(record)

    def reconcile(self, release: str) -> list[ReplicaMoved]:
        """Make the processes match spec.json: start missing replicas, replace dead ones, stop extra ones.
        Returns the restarted replicas that had to take a new port."""
        moved: list[ReplicaMoved] = []
        with self._locked(release) as directory:
            desired = self._read(directory / "spec.json")
            if desired is None:
                return moved
            spec = DeploymentSpec.model_validate(desired)
            records = {index: self._read(directory / f"replica-{index}.json") for index in range(spec.replicas)}
            self._settle_unrecorded(directory, spec, records)
            present = {index: record for index, record in records.items() if record is not None}
            with ThreadPoolExecutor(max_workers=max(1, min(8, len(present)))) as pool:  # slow answers overlap
                checks = dict(zip(present, pool.map(self._check, present.values())))
            for index in range(spec.replicas):
                record = records[index]
                if record is None:
                    self._start_replica(directory, spec, index, restarts=0)
                    continue
                running, answered = checks[index]
                verdict, checked = judge_replica(record, running, answered, time.monotonic())
                if verdict is Verdict.ALIVE:
                    if checked != record:
                        self._write(directory / f"replica-{index}.json", checked)
                    continue
                restarted = self._replace(directory, spec, checked, verdict)
                if restarted is not None and restarted["port"] != record["port"]:
                    moved.append(ReplicaMoved(release, str(spec.endpoint_id), f"http://127.0.0.1:{record['port']}",
                                              f"http://127.0.0.1:{restarted['port']}"))
            for path in directory.glob("replica-*.json"):
                record = self._read(path)
                if record and record["index"] >= spec.replicas:
                    _stop_replica(record)
                    path.unlink(missing_ok=True)
            self._write_targets(release, directory)
        return moved

    def _replace(self, directory: Path, spec: DeploymentSpec, record: dict, verdict: Verdict) -> dict | None:
        """Start the successor of a dead or hung replica (stopping a hung one first); None while backing off."""
        index = record["index"]
        if verdict is Verdict.HUNG:
            log.warning("replica stopped answering /health; replacing it", release=spec.release, replica=index,
                        pid=record["pid"], checks=record["unanswered_checks"])
            _stop_replica(record)
        # How long it ran, on the monotonic clock (a reading from before a reboot counts as a long run).
        ran_for = time.monotonic() - record.get("started_monotonic", 0.0)
        if ran_for < 0 or record.get("stopped"):
            ran_for = STABLE_AFTER_S + 1  # stopped on purpose (`bud dev down`), or before a reboot
        restarts = 0 if ran_for > STABLE_AFTER_S else record["restarts"] + 1
        if restarts > MAX_RESTARTS and ran_for < min(2 ** restarts, 300):
            return None  # crash loop: back off (wait_ready reports it; later passes retry slowly)
        if verdict is Verdict.EXITED and not record.get("stopped"):
            log.warning("replica died; restarting", release=spec.release, replica=index, pid=record["pid"])
        return self._start_replica(directory, spec, index, restarts=restarts, port=record["port"])

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
        """Stop every replica process ever started here that still runs (replaced ones too) but keep each release's
        desired state: the next supervisor pass (the next `bud dev up`) starts them again. Returns how many stopped."""
        stopped = 0
        if not self.replicas_dir.exists():
            return 0
        for directory in self.replicas_dir.iterdir():
            if not directory.is_dir():
                continue
            with self._locked(directory.name):
                stopped += self._stop_every_start(directory)
                for path in directory.glob("replica-*.json"):
                    record = self._read(path)
                    if record:  # the record stays: the restart reuses its port, and is no crash
                        self._write(path, {**record, "stopped": True})
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
            # A runtime can take longer to answer than the heartbeat timeout on a busy host: beat while it starts.
            healthy = asyncio.ensure_future(asyncio.to_thread(process.wait_healthy))
            while not healthy.done():
                heartbeat()
                await asyncio.wait({healthy}, timeout=PROBE_HEARTBEAT_EVERY_S)
            await healthy
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
                self._stop_every_start(directory)
                for path in directory.glob("replica-*.json"):
                    path.unlink(missing_ok=True)
            self._write(directory / "spec.json", desired)

    def leaving(self, spec: DeploymentSpec, deleting: bool) -> list[tuple[str, str]]:
        """The replicas that applying `spec` stops: those past the new count, or all when what the processes run
        changes (or the release goes)."""
        directory = self._release_dir(spec.release)
        current = self._read(directory / "spec.json")
        if current is None and not deleting:
            return []
        replace_all = deleting or _process_facts(current) != _process_facts(spec.model_dump(mode="json"))
        leaving = []
        for path in sorted(directory.glob("replica-*.json")):
            record = self._read(path)
            if record and (replace_all or record["index"] >= spec.replicas) and _is_running(record):
                leaving.append((f"{spec.release}-{record['index']}", f"http://127.0.0.1:{record['port']}"))
        return leaving

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
            process = _replica_process(record) if record else None
            if process is not None:
                try:
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
                if not _is_running(record):
                    states.append(ReplicaState(name=name, ready=False, url=url, phase="Exited",
                                               reason=self._exit_reason(Path(record["log"]))))
                    continue
                try:
                    response = await client.get(f"{url}/health")
                    ready = response.status_code == 200 and _answer_is_from(response, record)
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
                explanation = LOAD_FAILURE_EXPLANATIONS.get(match["reason"], match["reason"])
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
            for start in self._every_start(directory):
                await asyncio.to_thread(_stop_replica, start)
                heartbeat()
            for path in directory.glob("replica-*.json"):
                path.unlink(missing_ok=True)
        (self.targets_dir / f"{spec.release}.json").unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)
        log.info("release deleted", release=spec.release)
