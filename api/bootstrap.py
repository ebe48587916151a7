"""First-start set-up: the default project with the first admin token and a first inference key, and the local
cluster's registration."""

from __future__ import annotations

import os

import asyncpg
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import inference_keys as key_format
from core.logging import get_logger
from core.secrets import PREFIX as SEALED_PREFIX
from control.payloads.clusters import ClusterSpec, GpuInventory, SimulatedSilicon
from core.settings import Settings
from control.store import clusters, inference_keys, projects
from workflows.ids import register_cluster_workflow_id
from workflows.starters import start_register_cluster

log = get_logger(__name__)
DEFAULT_PROJECT = "default"


async def ensure_admin_token(pool: asyncpg.Pool, settings: Settings) -> str | None:
    """Create the default project and an admin token if none exists; returns the new token (else None)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE api_tokens IN SHARE ROW EXCLUSIVE MODE")
        if await projects.admin_token_exists(conn):
            return None
        project = await projects.get_project_by_name(conn, DEFAULT_PROJECT) or await projects.create_project(
            conn, DEFAULT_PROJECT
        )
        _, token = await projects.issue_token(conn, project.id, "admin", role=projects.TokenRole.ADMIN)
    path = settings.admin_token_path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    log.info("created the first admin token", path=str(path))
    return token


def _write_private(path, text: str) -> None:
    """Write `text` to `path` (mode 600), whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(aside, path)


async def ensure_inference_key(pool: asyncpg.Pool, settings: Settings) -> str | None:
    """A first inference key for the default project in <state_dir>/inference-key (mode 600), beside the admin
    token. A file holding a key the gateway still accepts is kept; otherwise a new key replaces it. Returns the
    new key (else None)."""
    path = settings.state_dir / "inference-key"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _INFERENCE_KEY_LOCK)
        if path.exists():
            current = path.read_text().strip()
            if current and await inference_keys.live_key_by_digest(conn, key_format.digest(current)) is not None:
                return None
        project = await projects.get_project_by_name(conn, DEFAULT_PROJECT)
        if project is None:
            return None
        _, key = await inference_keys.create_key(conn, project.id, "default")
        _write_private(path, key + "\n")
    log.info("created a first inference key", path=str(path))
    return key


_INFERENCE_KEY_LOCK = 0x6275640002  # serializes API processes starting together


def local_cluster_spec(settings: Settings) -> ClusterSpec:
    return ClusterSpec(
        name=settings.local_cluster_name,
        kind="local",
        gpus=[GpuInventory(gpu_type=settings.local_cluster_gpu_type, count=settings.local_cluster_gpu_count)],
        simulation=(SimulatedSilicon.model_validate(settings.local_cluster_simulation)
                    if settings.local_cluster_simulation else None),
    )


async def seal_stored_secrets(pool: asyncpg.Pool, settings: Settings) -> None:
    """Kubeconfigs stored before they were sealed at rest get sealed once, at the first start that can."""
    async with pool.acquire() as conn, conn.transaction():
        sealed = await clusters.seal_plain_kubeconfigs(conn, settings.secret_box().seal, SEALED_PREFIX)
    if sealed:
        log.info("sealed stored kubeconfigs", count=sealed)


async def ensure_local_cluster(pool: asyncpg.Pool, temporal: Client, settings: Settings) -> None:
    """Register this machine as the platform-wide `local` cluster once; later starts find it."""
    spec = local_cluster_spec(settings)
    async with pool.acquire() as conn:
        row = await clusters.insert_cluster(conn, None, spec)
        if row is None:
            row = await clusters.get_platform_cluster_by_name(conn, spec.name)
            if row.status != "REGISTERING":
                return
        await clusters.set_workflow_id(conn, row.id, register_cluster_workflow_id(row.id))
    try:
        await start_register_cluster(temporal, settings, row.id, spec)
        log.info("registering the local cluster", cluster_id=str(row.id))
    except WorkflowAlreadyStartedError:
        pass
