"""Every client a worker needs, built once per process and shared by all activities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import httpx
from temporalio.client import Client

from budsim.catalog import get_gpu
from clusters.local import LocalBackend
from core.db import apply_migrations, create_pool
from core.gpu_types import CANONICAL_GPU_TYPES
from core.objectstore import ObjectStore
from core.settings import Settings
from registry.clamd import ClamdClient


@dataclass
class Clients:
    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    clamd: ClamdClient
    http: httpx.AsyncClient
    temporal: Client
    local_backend: LocalBackend


def local_backend(settings: Settings) -> LocalBackend:
    memory = {gpu_type: get_gpu(gpu_type).memory_gib for gpu_type in CANONICAL_GPU_TYPES}
    return LocalBackend(settings.state_dir, gpu_memory_gb=memory)


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
                          local_backend=local_backend(settings))
    finally:
        if own_pool:
            await pool.close()
