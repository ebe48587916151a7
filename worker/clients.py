"""Every client a worker needs, built once per process and shared by all activities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from core.db import apply_migrations, create_pool
from core.objectstore import ObjectStore
from core.settings import Settings
from registry.clamd import ClamdClient


@dataclass
class Clients:
    settings: Settings
    pool: asyncpg.Pool
    store: ObjectStore
    clamd: ClamdClient


@asynccontextmanager
async def build_clients(settings: Settings, pool: asyncpg.Pool | None = None) -> AsyncIterator[Clients]:
    """Open the clients (or reuse a given pool, as tests do) and close what we opened."""
    own_pool = pool is None
    if own_pool:
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await apply_migrations(pool)
    try:
        async with ObjectStore(settings) as store:
            yield Clients(settings=settings, pool=pool, store=store,
                          clamd=ClamdClient(settings.clamd_host, settings.clamd_port))
    finally:
        if own_pool:
            await pool.close()
