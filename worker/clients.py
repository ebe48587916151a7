"""Every client a worker needs, built once per process and shared by all activities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import httpx
from temporalio.client import Client

from clusters.local import LocalBackend, ReplicaMoved
from clusters.resolver import BackendResolver
from core.db import apply_migrations, create_pool
from core.logging import get_logger
from core.objectstore import ObjectStore
from core.settings import Settings
from control.store import endpoints
from registry.clamd import ClamdClient

log = get_logger(__name__)


@dataclass
class Clients:
    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    clamd: ClamdClient
    http: httpx.AsyncClient
    temporal: Client
    backends: BackendResolver  # the only source of cluster backends: activities ask it per cluster

    @property
    def local_backend(self) -> LocalBackend:
        return self.backends.local


@asynccontextmanager
async def build_clients(settings: Settings, temporal: Client, pool: asyncpg.Pool | None = None) -> AsyncIterator[Clients]:
    """Open the clients (or reuse a given pool, as tests do) and close what we opened."""
    own_pool = pool is None
    if own_pool:
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await apply_migrations(pool)
    try:
        async with ObjectStore(settings) as store, httpx.AsyncClient(timeout=30) as http:
            yield Clients(settings=settings, pool=pool, store=store, http=http, temporal=temporal,
                          clamd=ClamdClient(settings.clamd_host, settings.clamd_port),
                          backends=BackendResolver(settings))
    finally:
        if own_pool:
            await pool.close()


async def supervise_local_replicas(clients: Clients, interval_s: float = 2.0) -> None:
    """Run forever in a control worker: restart crashed local replicas, and point the routes at any that came back
    on another port (the gateway reads replica addresses from PostgreSQL)."""

    async def republish(moved: list[ReplicaMoved]) -> None:
        async with clients.pool.acquire() as conn:
            for replica in moved:
                rows = await endpoints.move_replica(conn, UUID(replica.endpoint_id), replica.old_url, replica.new_url)
                log.info("routes follow a restarted replica", release=replica.release, old=replica.old_url,
                         new=replica.new_url, rows=rows)

    await clients.local_backend.supervise(interval_s, on_moved=republish)
