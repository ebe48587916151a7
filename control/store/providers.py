"""External providers of a project. The API key is stored sealed (core.secrets) and no row here carries it."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from control.store.rows import Row


class ProviderRow(Row):
    id: UUID
    project_id: UUID
    name: str
    kind: str
    base_url: str
    models: list[str]
    price_input_per_mtok: float
    price_output_per_mtok: float
    created_at: datetime
    updated_at: datetime


_COLUMNS = ("id, project_id, name, kind, base_url, models, price_input_per_mtok, price_output_per_mtok, created_at, "
            "updated_at")


async def create_provider(conn: asyncpg.Connection, project_id: UUID, name: str, kind: str, base_url: str,
                          api_key_sealed: str, models: list[str], price_input: float,
                          price_output: float) -> ProviderRow | None:
    """The new provider, or None when the project already has one by that name."""
    return ProviderRow.one(await conn.fetchrow(
        f"INSERT INTO providers (project_id, name, kind, base_url, api_key_sealed, models, price_input_per_mtok, "
        f"price_output_per_mtok) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        f"ON CONFLICT (project_id, name) DO NOTHING RETURNING {_COLUMNS}",
        project_id, name, kind, base_url, api_key_sealed, models, price_input, price_output))


async def list_providers(conn: asyncpg.Connection, project_id: UUID) -> list[ProviderRow]:
    return ProviderRow.many(await conn.fetch(
        f"SELECT {_COLUMNS} FROM providers WHERE project_id = $1 ORDER BY name", project_id))


async def get_provider(conn: asyncpg.Connection, provider_id: UUID, project_id: UUID) -> ProviderRow | None:
    return ProviderRow.one(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM providers WHERE id = $1 AND project_id = $2", provider_id, project_id))


async def routes_using(conn: asyncpg.Connection, provider_id: UUID) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT route_name FROM route_provider_backends WHERE provider_id = $1 "
                            "ORDER BY route_name", provider_id)
    return [row["route_name"] for row in rows]


async def delete_provider(conn: asyncpg.Connection, provider_id: UUID, project_id: UUID) -> bool:
    status = await conn.execute("DELETE FROM providers WHERE id = $1 AND project_id = $2", provider_id, project_id)
    return status.split()[-1] != "0"
