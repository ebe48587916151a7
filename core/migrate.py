"""`python -m core.migrate`: apply the pending migrations to BUD_DATABASE_URL and exit (the Helm chart's migration
Job). Safe beside API and worker processes that migrate at start: core.db serializes every migrator with a
PostgreSQL advisory lock, so each version is applied exactly once."""

from __future__ import annotations

import asyncio

from core.db import apply_migrations, create_pool
from core.settings import get_settings


async def migrate() -> list[int]:
    pool = await create_pool(get_settings().database_url, min_size=1, max_size=1)
    try:
        return await apply_migrations(pool)
    finally:
        await pool.close()


def main() -> None:
    applied = asyncio.run(migrate())
    print(f"applied migrations {', '.join(map(str, applied))}" if applied else "schema up to date", flush=True)


if __name__ == "__main__":
    main()
