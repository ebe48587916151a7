"""A throwaway stack for benchmarks: PostgreSQL, Redis, Temporal, S3, clamd, the API (in process) and worker
processes, all on free ports with state in a temporary folder, PostgreSQL and Redis with random passwords; stopped
and removed on exit."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.settings import Settings
from core.paths import PROJECT_ROOT
from devstack import services
from devstack.clamd import clamd_process
from core.processes import ManagedProcess, free_port


@dataclass
class BenchStack:
    settings: Settings
    api: httpx.AsyncClient
    workers: list[ManagedProcess]
    state: Path


def start_worker(settings: Settings, state: Path, queue: str) -> ManagedProcess:
    name = f"worker-{queue}-{len(list((state / 'logs').glob('worker-*')))}"
    return ManagedProcess(name=name, argv=[sys.executable, "-m", "worker", "--queue", queue],
                          log_path=state / "logs" / f"{name}.log", healthy=lambda: True,
                          env={**os.environ, **settings.as_environment()}, cwd=PROJECT_ROOT).start()


@asynccontextmanager
async def bench_stack(local_gpus: int = 8, queues: tuple[str, ...] = ("bud-control", "bud-optimizer"),
                      postgres_settings: dict[str, str] | None = None,
                      **overrides: object) -> AsyncIterator[BenchStack]:
    """The servers, workers and API of a stack in a fresh folder; `overrides` replace the stack's Settings and
    `postgres_settings` are extra server settings (`-c name=value`)."""
    state = Path(tempfile.mkdtemp(prefix="bud-bench-"))
    state.chmod(0o755)
    processes: list[ManagedProcess] = []
    try:
        pg_port, temporal_port, s3_port, clamd_port = free_port(), free_port(), free_port(), free_port()
        redis_port, pg_password, redis_password = free_port(), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        postgres = services.postgres_server(state, pg_port, pg_password, fast_unsafe=True)
        postgres.argv = [*postgres.argv, *(f"-c{name}={value}" for name, value in (postgres_settings or {}).items())]
        processes.append(postgres.start().wait_healthy())
        services.ensure_database(pg_port, pg_password)
        processes.append(services.redis_server(state, redis_port, redis_password).start().wait_healthy())
        processes.append(services.temporal_dev_server(state, temporal_port, free_port(), headless=True).start().wait_healthy())
        processes.append(services.s3_server(state, s3_port, "benchkey", "benchsecret").start().wait_healthy())
        processes.append(clamd_process(state / "clamd", clamd_port).start().wait_healthy())
        settings = Settings(state_dir=state, database_url=f"postgresql://bud:{pg_password}@127.0.0.1:{pg_port}/bud",
                            redis_url=f"redis://:{redis_password}@127.0.0.1:{redis_port}/0",
                            temporal_address=f"127.0.0.1:{temporal_port}", s3_endpoint=f"http://127.0.0.1:{s3_port}",
                            s3_access_key="benchkey", s3_secret_key="benchsecret", clamd_port=clamd_port,
                            gateway_port=free_port(), local_cluster_gpu_count=local_gpus, **overrides)
        workers = [start_worker(settings, state, queue) for queue in queues]
        processes.extend(workers)
        from api.app import create_app

        app = create_app(settings)
        async with app.router.lifespan_context(app):
            token = (state / "admin-token").read_text().strip()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", timeout=60,
                                         headers={"Authorization": f"Bearer {token}"}) as api:
                yield BenchStack(settings=settings, api=api, workers=workers, state=state)
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(state, ignore_errors=True)


async def register_model(stack: BenchStack, model_dir, name: str = "bench-model") -> dict:
    """Upload a generated model folder into the default project's key space, register it and wait out its scan."""
    import asyncio

    from devstack.s3_seed import upload_folder

    settings, api = stack.settings, stack.api
    await asyncio.to_thread(upload_folder, settings, model_dir.path, settings.models_bucket, f"default/{name}")
    model = (await api.post("/api/models", json={
        "name": name, "architecture": "llama", "parameter_count": model_dir.parameter_count,
        "context_length": 2048, "source_path": f"s3://models/default/{name}"})).json()
    async with asyncio.timeout(600):
        while (model := (await api.get(f"/api/models/{model['id']}")).json())["status"] == "SCANNING":
            await asyncio.sleep(0.05)
    return model
