"""The control plane's route source: routes, their projects, weights, ready replicas, providers and fallbacks from
PostgreSQL.

`python -m gateway --route-source gateway.postgres_source:from_environment` (BUD_DATABASE_URL; provider keys are
opened with BUD_SECRET_KEY, or in dev the state folder's key, like the worker's kubeconfigs).

A provider whose sealed key cannot be opened (another BUD_SECRET_KEY) is left out of its routes, with an error in
the log naming the provider (never the key); the rest of the table still loads.
"""

from __future__ import annotations

import logging

import asyncpg

from core.secrets import SecretBox, SecretUnreadable
from core.settings import get_settings
from gateway.routes import Backend, ProviderTarget, RouteInfo, RouteTable

log = logging.getLogger("gateway.routes")

ROUTE_QUERY = """
SELECT r.name AS route_name, r.project_id, r.spill_queue_depth,
       b.endpoint_id, b.weight, b.fallback, e.name AS served_model_name,
       COALESCE(array_agg(er.url ORDER BY er.name) FILTER (WHERE er.ready), '{}') AS urls
FROM routes r
JOIN route_backends b ON b.route_name = r.name
JOIN endpoints e ON e.id = b.endpoint_id
LEFT JOIN endpoint_replicas er ON er.endpoint_id = b.endpoint_id
GROUP BY r.name, r.project_id, r.spill_queue_depth, b.endpoint_id, b.weight, b.fallback, e.name
ORDER BY r.name, b.endpoint_id
"""
PROVIDER_QUERY = """
SELECT r.name AS route_name, r.project_id, r.spill_queue_depth, pb.provider_id, pb.model, pb.weight, pb.fallback,
       p.name AS provider_name, p.base_url, p.api_key_sealed
FROM routes r
JOIN route_provider_backends pb ON pb.route_name = r.name
JOIN providers p ON p.id = pb.provider_id AND p.project_id = r.project_id
ORDER BY r.name, pb.provider_id, pb.model
"""
ROUTES_QUERY = "SELECT name, project_id, spill_queue_depth FROM routes"


class PostgresRouteSource:
    def __init__(self, dsn: str, secret_box: SecretBox | None = None):
        self.dsn = dsn
        self.secret_box = secret_box
        self._pool: asyncpg.Pool | None = None
        self._opened: dict[str, str] = {}  # sealed -> plaintext, so a key is decrypted once, not every poll
        self._unreadable: set[str] = set()  # providers already reported

    async def load(self) -> RouteTable:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        async with self._pool.acquire() as connection:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                route_rows = await connection.fetch(ROUTES_QUERY)
                rows = await connection.fetch(ROUTE_QUERY)
                provider_rows = await connection.fetch(PROVIDER_QUERY)
        routes: dict[str, list[Backend]] = {str(row["name"]): [] for row in route_rows}
        info = {
            str(row["name"]): RouteInfo(project_id=str(row["project_id"]), spill_queue_depth=row["spill_queue_depth"])
            for row in route_rows
        }
        for row in rows:
            routes.setdefault(row["route_name"], []).append(
                Backend(
                    endpoint_id=str(row["endpoint_id"]),
                    weight=row["weight"],
                    replicas=list(row["urls"]),
                    served_model_name=row["served_model_name"]
                    if row["served_model_name"] != row["route_name"]
                    else None,
                    fallback=row["fallback"],
                )
            )
        opened: dict[str, str] = {}
        for row in provider_rows:
            api_key = self._open(row["api_key_sealed"], row["provider_name"], opened)
            if api_key is None:
                continue
            provider_id = str(row["provider_id"])
            routes.setdefault(row["route_name"], []).append(
                Backend(
                    endpoint_id=f"{provider_id}/{row['model']}",
                    weight=row["weight"],
                    fallback=row["fallback"],
                    provider=ProviderTarget(
                        provider_id=provider_id,
                        name=row["provider_name"],
                        base_url=row["base_url"],
                        api_key=api_key,
                        model=row["model"],
                    ),
                )
            )
        self._opened = opened  # keys of providers gone from the table are forgotten
        return RouteTable(routes={name: tuple(backends) for name, backends in routes.items()}, info=info)

    def _open(self, sealed: str, provider_name: str, opened: dict[str, str]) -> str | None:
        plaintext = self._opened.get(sealed) or opened.get(sealed)
        if plaintext is None:
            try:
                if self.secret_box is None:
                    self.secret_box = get_settings().secret_box()
                plaintext = self.secret_box.open(sealed)
            except (SecretUnreadable, ValueError) as exc:
                if provider_name not in self._unreadable:
                    self._unreadable.add(provider_name)
                    log.error("provider %s left out of its routes: its key cannot be opened (%s)", provider_name,
                              exc)  # fmt: skip
                return None
        opened[sealed] = plaintext
        return plaintext


def from_environment() -> PostgresRouteSource:
    return PostgresRouteSource(get_settings().database_url)
