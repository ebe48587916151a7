"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from core.settings import Settings
from core.paths import PROJECT_ROOT
from devstack import services
from core.processes import ManagedProcess, free_port


@contextmanager
def server_state_dir(prefix: str) -> Iterator[Path]:
    """A fresh state folder other system users can traverse (PostgreSQL runs as its own user when we are root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def start_worker_process(settings: Settings, state_dir: Path, queue: str | None = None,
                         extra_env: dict[str, str] | None = None) -> ManagedProcess:
    """A real `python -m worker` process, for tests that kill it."""
    queue = queue or settings.control_queue
    name = unique("worker")
    return ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "worker", "--queue", queue],
        log_path=state_dir / "logs" / f"{name}.log",
        healthy=lambda: True,
        env={**os.environ, **settings.as_environment(), **(extra_env or {})},
        cwd=PROJECT_ROOT,
    ).start()


@asynccontextmanager
async def api_process(settings: Settings, state_dir: Path, name: str) -> AsyncIterator[tuple[str, ManagedProcess]]:
    """The API as `python -m api` serves it (uvicorn, its logging), on a free port against the test stack; yields
    its base URL and the process (whose log_path holds what it logged). Stopped on the way out."""
    port = free_port()
    process = services.python_service(
        name, ["api"], state_dir, {**settings.as_environment(), "BUD_API_PORT": str(port)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    ).start()
    try:
        await asyncio.to_thread(process.wait_healthy)
        yield f"http://127.0.0.1:{port}", process
    finally:
        await asyncio.to_thread(process.stop)
