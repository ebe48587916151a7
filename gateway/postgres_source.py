"""The control plane's route source: routes, weights and ready replicas from PostgreSQL.

`python -m gateway --route-source gateway.postgres_source:from_environment` (BUD_DATABASE_URL).
"""

from __future__ import annotations

import asyncpg

from core.settings import get_settings
from gateway.routes import Backend, RouteTable

ROUTE_QUERY = """
SELECT b.route_name, b.endpoint_id, b.weight, e.name AS served_model_name,
       COALESCE(array_agg(r.url ORDER BY r.name) FILTER (WHERE r.ready), '{}') AS urls
FROM route_backends b
JOIN endpoints e ON e.id = b.endpoint_id
LEFT JOIN endpoint_replicas r ON r.endpoint_id = b.endpoint_id
GROUP BY b.route_name, b.endpoint_id, b.weight, e.name
ORDER BY b.route_name, b.endpoint_id
"""


class PostgresRouteSource:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def load(self) -> RouteTable:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        rows = await self._pool.fetch(ROUTE_QUERY)
        routes: dict[str, list[Backend]] = {}
        for row in rows:
            routes.setdefault(row["route_name"], []).append(
                Backend(
                    endpoint_id=str(row["endpoint_id"]),
                    weight=row["weight"],
                    replicas=list(row["urls"]),
                    served_model_name=row["served_model_name"]
                    if row["served_model_name"] != row["route_name"]
                    else None,
                )
            )
        return RouteTable(routes={name: tuple(backends) for name, backends in routes.items()})


def from_environment() -> PostgresRouteSource:
    return PostgresRouteSource(get_settings().database_url)
