"""Routes: a model name spread over endpoints by weight (what the gateway reads). Writes are idempotent."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from control.payloads.deployments import EndpointStatus
from control.store.rows import Row

ROUTE_QUERY = """
SELECT r.name, r.project_id, r.shift, r.updated_at, r.spill_queue_depth,
       COALESCE((SELECT json_agg(json_build_object('endpoint_id', b.endpoint_id, 'endpoint_name', e.name,
                                                   'weight', b.weight, 'status', e.status) ORDER BY e.name)
                 FROM route_backends b JOIN endpoints e ON e.id = b.endpoint_id
                 WHERE b.route_name = r.name AND NOT b.fallback), '[]') AS backends,
       COALESCE((SELECT json_agg(json_build_object('provider_id', p.provider_id, 'provider_name', v.name,
                                                   'model', p.model, 'weight', p.weight, 'fallback', p.fallback,
                                                   'fallback_position', p.fallback_position)
                                 ORDER BY p.fallback, p.fallback_position, v.name, p.model)
                 FROM route_provider_backends p JOIN providers v ON v.id = p.provider_id
                 WHERE p.route_name = r.name), '[]') AS provider_backends,
       COALESCE((SELECT json_agg(json_build_object('endpoint_id', b.endpoint_id, 'endpoint_name', e.name,
                                                   'weight', b.weight, 'status', e.status,
                                                   'fallback_position', b.fallback_position)
                                 ORDER BY b.fallback_position, e.name)
                 FROM route_backends b JOIN endpoints e ON e.id = b.endpoint_id
                 WHERE b.route_name = r.name AND b.fallback), '[]') AS endpoint_fallbacks
FROM routes r
"""


class RouteBackend(Row):
    endpoint_id: UUID
    endpoint_name: str
    weight: int
    status: EndpointStatus
    fallback_position: int | None = None  # a fallback's place in the order it is tried (0 first); None: a primary


class ProviderBackend(Row):
    provider_id: UUID
    provider_name: str
    model: str
    weight: int
    fallback: bool
    fallback_position: int | None = None


class RouteRow(Row):
    name: str
    project_id: UUID
    shift: dict[str, Any] | None  # the last traffic shift's state (ShiftRecord.state)
    updated_at: datetime
    spill_queue_depth: int | None
    backends: list[RouteBackend]  # the primary endpoints, ordered by endpoint name
    provider_backends: list[ProviderBackend]  # primaries by provider name and model, then fallbacks in their order
    endpoint_fallbacks: list[RouteBackend]  # in their order

    @property
    def fallbacks(self) -> list[RouteBackend | ProviderBackend]:
        """Endpoint and provider fallbacks together, in the order they are tried."""
        both: list[RouteBackend | ProviderBackend] = [*self.endpoint_fallbacks,
                                                      *(b for b in self.provider_backends if b.fallback)]
        return sorted(both, key=lambda b: (b.fallback_position is None, b.fallback_position or 0))


class RouteTaken(Exception):
    """The name belongs to another project's route."""


async def name_owner(conn: asyncpg.Connection, name: str) -> UUID | None:
    """The project whose route or endpoint is called `name` (both are model names clients send), if any."""
    return await conn.fetchval(
        "SELECT project_id FROM routes WHERE name = $1 UNION ALL "
        "SELECT project_id FROM endpoints WHERE name = $1 AND status <> 'DELETED' LIMIT 1", name)


async def get_route(conn: asyncpg.Connection, name: str, project_id: UUID | None = None) -> RouteRow | None:
    if project_id is None:
        return RouteRow.one(await conn.fetchrow(ROUTE_QUERY + " WHERE r.name = $1", name))
    return RouteRow.one(await conn.fetchrow(ROUTE_QUERY + " WHERE r.name = $1 AND r.project_id = $2",
                                            name, project_id))


async def list_routes(conn: asyncpg.Connection, project_id: UUID) -> list[RouteRow]:
    return RouteRow.many(
        await conn.fetch(ROUTE_QUERY + " WHERE r.project_id = $1 ORDER BY r.name", project_id))


async def _claim(conn: asyncpg.Connection, name: str, project_id: UUID) -> None:
    owner = await conn.fetchval(
        """INSERT INTO routes (name, project_id) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET updated_at = now() WHERE routes.project_id = EXCLUDED.project_id
           RETURNING project_id""",
        name, project_id)
    if owner is None:
        raise RouteTaken(name)


async def set_weights(conn: asyncpg.Connection, name: str, project_id: UUID, weights: dict[UUID, int]) -> None:
    """Make the route's primary endpoints exactly `weights` in one transaction (the gateway never sees a half-done
    swap). Fallbacks and provider backends stay; an endpoint named here that was a fallback becomes a primary."""
    async with conn.transaction():
        await _claim(conn, name, project_id)
        await conn.execute("DELETE FROM route_backends WHERE route_name = $1 AND NOT fallback "
                           "AND NOT (endpoint_id = ANY($2::uuid[]))", name, list(weights))
        await conn.executemany(
            """INSERT INTO route_backends (route_name, endpoint_id, weight) VALUES ($1, $2, $3)
               ON CONFLICT (route_name, endpoint_id) DO UPDATE SET weight = EXCLUDED.weight, fallback = false,
                                                                   fallback_position = NULL""",
            [(name, endpoint_id, weight) for endpoint_id, weight in weights.items()])


_UNSET: Any = object()


async def set_backends(conn: asyncpg.Connection, name: str, project_id: UUID, endpoints: dict[UUID, int],
                       providers: dict[tuple[UUID, str], int],
                       fallbacks: list[UUID | tuple[UUID, str]] | None = None,
                       spill_queue_depth: int | None = _UNSET) -> None:
    """Make the route's primaries exactly `endpoints` and `providers` (with their weights) and, when given, its
    fallbacks exactly `fallbacks` (tried in that order) and its spill depth, in one transaction. Fallbacks not
    given stay, in their order (less any that became primaries)."""
    async with conn.transaction():
        await _claim(conn, name, project_id)
        if fallbacks is None:
            kept = await conn.fetch(
                "SELECT endpoint_id AS target, NULL AS model, fallback_position FROM route_backends "
                "WHERE route_name = $1 AND fallback UNION ALL "
                "SELECT provider_id, model, fallback_position FROM route_provider_backends "
                "WHERE route_name = $1 AND fallback ORDER BY fallback_position", name)
            ordered: list[UUID | tuple[UUID, str]] = [
                row["target"] if row["model"] is None else (row["target"], row["model"]) for row in kept]
            fallbacks = [t for t in ordered if t not in endpoints and t not in providers]
        position = {target: index for index, target in enumerate(fallbacks)}
        await conn.execute("DELETE FROM route_backends WHERE route_name = $1", name)
        await conn.execute("DELETE FROM route_provider_backends WHERE route_name = $1", name)
        await conn.executemany(
            "INSERT INTO route_backends (route_name, endpoint_id, weight, fallback, fallback_position) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(name, endpoint_id, weight, False, None) for endpoint_id, weight in endpoints.items()]
            + [(name, t, 0, True, position[t]) for t in fallbacks if not isinstance(t, tuple)])
        await conn.executemany(
            "INSERT INTO route_provider_backends (route_name, provider_id, model, weight, fallback, fallback_position) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [(name, provider_id, model, weight, False, None) for (provider_id, model), weight in providers.items()]
            + [(name, t[0], t[1], 0, True, position[t]) for t in fallbacks if isinstance(t, tuple)])
        if spill_queue_depth is not _UNSET:
            await conn.execute("UPDATE routes SET spill_queue_depth = $2 WHERE name = $1", name, spill_queue_depth)


async def set_shift(conn: asyncpg.Connection, name: str, state: dict) -> None:
    await conn.execute("UPDATE routes SET shift = $2 WHERE name = $1", name, state)
