"""Routes: a model name spread over endpoints by weight (what the gateway reads). Writes are idempotent."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from control.payloads.deployments import EndpointStatus
from control.store.rows import Row

ROUTE_QUERY = """
SELECT r.name, r.project_id, r.shift, r.updated_at,
       COALESCE(json_agg(json_build_object('endpoint_id', b.endpoint_id, 'endpoint_name', e.name, 'weight', b.weight,
                                           'status', e.status) ORDER BY e.name)
                FILTER (WHERE b.endpoint_id IS NOT NULL), '[]') AS backends
FROM routes r
LEFT JOIN route_backends b ON b.route_name = r.name
LEFT JOIN endpoints e ON e.id = b.endpoint_id
"""


class RouteBackend(Row):
    endpoint_id: UUID
    endpoint_name: str
    weight: int
    status: EndpointStatus


class RouteRow(Row):
    name: str
    project_id: UUID
    shift: dict[str, Any] | None  # the last traffic shift's state (ShiftRecord.state)
    updated_at: datetime
    backends: list[RouteBackend]  # ordered by endpoint name


class RouteTaken(Exception):
    """The name belongs to another project's route."""


async def name_owner(conn: asyncpg.Connection, name: str) -> UUID | None:
    """The project whose route or endpoint is called `name` (both are model names clients send), if any."""
    return await conn.fetchval(
        "SELECT project_id FROM routes WHERE name = $1 UNION ALL "
        "SELECT project_id FROM endpoints WHERE name = $1 AND status <> 'DELETED' LIMIT 1", name)


async def get_route(conn: asyncpg.Connection, name: str, project_id: UUID | None = None) -> RouteRow | None:
    if project_id is None:
        return RouteRow.one(await conn.fetchrow(ROUTE_QUERY + " WHERE r.name = $1 GROUP BY r.name", name))
    return RouteRow.one(await conn.fetchrow(ROUTE_QUERY + " WHERE r.name = $1 AND r.project_id = $2 GROUP BY r.name",
                                            name, project_id))


async def list_routes(conn: asyncpg.Connection, project_id: UUID) -> list[RouteRow]:
    return RouteRow.many(
        await conn.fetch(ROUTE_QUERY + " WHERE r.project_id = $1 GROUP BY r.name ORDER BY r.name", project_id))


async def set_weights(conn: asyncpg.Connection, name: str, project_id: UUID, weights: dict[UUID, int]) -> None:
    """Make the route's backends exactly `weights` in one transaction (the gateway never sees a half-done swap)."""
    async with conn.transaction():
        owner = await conn.fetchval(
            """INSERT INTO routes (name, project_id) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET updated_at = now() WHERE routes.project_id = EXCLUDED.project_id
               RETURNING project_id""",
            name, project_id)
        if owner is None:
            raise RouteTaken(name)
        await conn.execute("DELETE FROM route_backends WHERE route_name = $1 AND NOT (endpoint_id = ANY($2::uuid[]))",
                           name, list(weights))
        await conn.executemany(
            """INSERT INTO route_backends (route_name, endpoint_id, weight) VALUES ($1, $2, $3)
               ON CONFLICT (route_name, endpoint_id) DO UPDATE SET weight = EXCLUDED.weight""",
            [(name, endpoint_id, weight) for endpoint_id, weight in weights.items()])


async def set_shift(conn: asyncpg.Connection, name: str, state: dict) -> None:
    await conn.execute("UPDATE routes SET shift = $2 WHERE name = $1", name, state)
