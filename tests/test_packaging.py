"""The files a newcomer or an operator reads must agree with the code: compose settings, migrations."""

from __future__ import annotations

from pathlib import Path

import yaml

from core.db import apply_migrations, migration_files
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_uses_only_real_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.temporal.yml").read_text())
    assert {"temporal", "temporal-ui", "temporal-db", "app-db", "api", "worker-control", "worker-optimizer"} <= set(compose["services"])
    known = {f"BUD_{name.upper()}" for name in Settings.model_fields}
    for service in ("api", "worker-control", "worker-optimizer"):
        env = compose["services"][service]["environment"]
        unknown = set(env) - known
        assert not unknown, f"{service} sets variables no setting reads: {unknown}"


def test_migration_versions_are_unique_and_ordered():
    versions = [version for version, _, _ in migration_files()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1


async def test_migrations_apply_once_even_when_run_concurrently(db_pool, settings):
    """API and workers start together and all migrate: exactly one applies each version, none fails."""
    import asyncio
    import uuid

    from core.db import create_pool

    name = f"migrate_{uuid.uuid4().hex[:8]}"
    async with db_pool.acquire() as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    pool = await create_pool(settings.database_url.rsplit("/", 1)[0] + f"/{name}", max_size=8)
    try:
        results = await asyncio.gather(*(apply_migrations(pool) for _ in range(4)))
        all_versions = [version for version, _, _ in migration_files()]
        assert sorted(results, key=len) == [[], [], [], all_versions]
        assert await apply_migrations(pool) == []  # and a later start finds nothing to do
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(all_versions)
    finally:
        await pool.close()
