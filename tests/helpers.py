"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.settings import Settings
from devstack import services
from devstack.process import ManagedProcess


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as BUD_* variables, for subprocesses (workers started and killed by tests)."""
    return {
        "BUD_STATE_DIR": str(settings.state_dir),
        "BUD_DATABASE_URL": settings.database_url,
        "BUD_TEMPORAL_ADDRESS": settings.temporal_address,
        "BUD_S3_ENDPOINT": settings.s3_endpoint,
        "BUD_S3_ACCESS_KEY": settings.s3_access_key,
        "BUD_S3_SECRET_KEY": settings.s3_secret_key,
        "BUD_CONTROL_QUEUE": settings.control_queue,
        "BUD_OPTIMIZER_QUEUE": settings.optimizer_queue,
        "BUD_CLAMD_PORT": str(settings.clamd_port),
        "BUD_GATEWAY_PORT": str(settings.gateway_port),
        "BUD_DEPLOY_READY_TIMEOUT_S": str(settings.deploy_ready_timeout_s),
    }


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
        env={**os.environ, **settings_env(settings), **(extra_env or {})},
        cwd=services.PROJECT_ROOT,
    ).start()
