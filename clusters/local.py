"""The local backend: replicas are processes on this machine (vLLM with a GPU, else the simulated runtime)."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from core.payloads.clusters import ClusterFacts, ClusterSpec
from devstack.process import ManagedProcess, free_port, http_ok


def has_real_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and shutil.which("vllm") is not None


class LocalBackend:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.replicas_dir = state_dir / "replicas"

    def runtime_argv(self, model: str, port: int, extra: list[str] | None = None) -> list[str]:
        """`vllm serve` when a GPU and vLLM are here, else the simulated runtime with the same flags."""
        head = ["vllm", "serve"] if has_real_gpu() else [sys.executable, "-m", "runtime", "serve"]
        return [*head, model, "--host", "127.0.0.1", "--port", str(port), *(extra or [])]

    async def probe(self, spec: ClusterSpec, heartbeat) -> ClusterFacts:
        """Prove a replica can start here: launch one runtime, wait for /health, stop it."""
        self.replicas_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = self.runtime_argv("bud-smoke-test", port, ["--max-num-seqs", "1"])
        process = ManagedProcess(
            name="runtime-smoke",
            argv=argv,
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
        declared = {pool.gpu_type: pool.count for pool in spec.gpus}
        notes = ["no GPU on this host: replicas run the simulated vLLM-compatible runtime"] if simulated else []
        return ClusterFacts(
            simulated_gpus=simulated, nodes=1, observed_gpus=declared, runtime_smoke_ms=round(elapsed_ms, 1), notes=notes
        )
