"""The control plane's route source: routes, their projects, weights, ready replicas, providers and fallbacks from
PostgreSQL.

`python -m gateway --route-source gateway.postgres_source:from_environment` (BUD_DATABASE_URL; provider keys are
opened with BUD_SECRET_KEY, or in dev the state folder's key, like the worker's kubeconfigs).

A provider whose sealed key cannot be opened (another BUD_SECRET_KEY) is left out of its routes, with an error in
the log naming the provider (never the key); the rest of the table still loads.

Changes are pushed: every commit that changes what the route query reads bumps `route_table_version` and notifies
channel `bud_routes`; `watch` LISTENs on a connection of its own (reconnecting when it is lost) and wakes the
gateway, which reloads at once; polling stays as the fallback. `version` is the route-table version of the last
table loaded, and `watch` heartbeats it about every second into `gateway_instances` (this gateway's instance id
and BUD_GATEWAY_ADVERTISE_URL), where a publish waits for every live gateway to serve what it committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable

import asyncpg

from core.secrets import SecretBox, SecretUnreadable
from core.settings import get_settings
from gateway.routes import Backend, ProviderTarget, RouteInfo, RouteTable

log = logging.getLogger("gateway.routes")

ROUTE_QUERY = """
SELECT r.name AS route_name, r.project_id, r.spill_queue_depth,
       b.endpoint_id, b.weight, b.fallback, b.fallback_position, e.name AS served_model_name,
       COALESCE(array_agg(er.url ORDER BY er.name) FILTER (WHERE er.ready), '{}') AS urls
FROM routes r
JOIN route_backends b ON b.route_name = r.name
JOIN endpoints e ON e.id = b.endpoint_id
LEFT JOIN endpoint_replicas er ON er.endpoint_id = b.endpoint_id
GROUP BY r.name, r.project_id, r.spill_queue_depth, b.endpoint_id, b.weight, b.fallback, b.fallback_position,
         e.name
ORDER BY r.name, b.fallback_position NULLS FIRST, b.endpoint_id
"""
PROVIDER_QUERY = """
SELECT r.name AS route_name, r.project_id, r.spill_queue_depth, pb.provider_id, pb.model, pb.weight, pb.fallback,
       pb.fallback_position, p.name AS provider_name, p.base_url, p.api_key_sealed
FROM routes r
JOIN route_provider_backends pb ON pb.route_name = r.name
JOIN providers p ON p.id = pb.provider_id AND p.project_id = r.project_id
ORDER BY r.name, pb.fallback_position NULLS FIRST, pb.provider_id, pb.model
"""
ROUTES_QUERY = "SELECT name, project_id, spill_queue_depth FROM routes"
VERSION_QUERY = "SELECT version FROM route_table_version"
CHANNEL = "bud_routes"
HEARTBEAT = """
INSERT INTO gateway_instances (instance_id, url, route_table_version, last_seen) VALUES ($1, $2, $3, now())
ON CONFLICT (instance_id) DO UPDATE SET url = EXCLUDED.url, route_table_version = EXCLUDED.route_table_version,
                                        last_seen = now()
"""


class PostgresRouteSource:
    def __init__(self, dsn: str, secret_box: SecretBox | None = None, *, url: str = "",
                 heartbeat_interval_s: float = 1.0, listen_check_s: float = 2.0):
        self.dsn = dsn
        self.secret_box = secret_box
        self.url = url  # how others reach this gateway, reported beside its version
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeat_interval_s = heartbeat_interval_s
        self.listen_check_s = listen_check_s
        self.version: int | None = None  # the route-table version of the last table loaded
        self.listening = False  # the LISTEN connection is up
        self._version_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()  # the loads and the heartbeat share one pool, opened once
        self._opened: dict[str, str] = {}  # sealed -> plaintext, so a key is decrypted once, not every poll
        self._unreadable: set[str] = set()  # providers already reported

    async def load(self) -> RouteTable:
        async with (await self._connections()).acquire() as connection:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                version = await connection.fetchval(VERSION_QUERY)
                route_rows = await connection.fetch(ROUTES_QUERY)
                rows = await connection.fetch(ROUTE_QUERY)
                provider_rows = await connection.fetch(PROVIDER_QUERY)
        # (fallback position, backend): primaries carry -1 and keep their order; fallbacks are tried in theirs
        routes: dict[str, list[tuple[int, Backend]]] = {str(row["name"]): [] for row in route_rows}
        info = {
            str(row["name"]): RouteInfo(project_id=str(row["project_id"]), spill_queue_depth=row["spill_queue_depth"])
            for row in route_rows
        }
        for row in rows:
            backend = Backend(
                endpoint_id=str(row["endpoint_id"]),
                weight=row["weight"],
                replicas=list(row["urls"]),
                served_model_name=row["served_model_name"] if row["served_model_name"] != row["route_name"] else None,
                fallback=row["fallback"],
            )
            routes.setdefault(row["route_name"], []).append((_position(row), backend))
        opened: dict[str, str] = {}
        for row in provider_rows:
            api_key = self._open(row["api_key_sealed"], row["provider_name"], opened)
            if api_key is None:
                continue
            provider_id = str(row["provider_id"])
            backend = Backend(
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
            routes.setdefault(row["route_name"], []).append((_position(row), backend))
        self._opened = opened  # keys of providers gone from the table are forgotten
        table = RouteTable(routes={
            name: tuple(backend for _, backend in sorted(backends, key=lambda entry: entry[0]))  # a stable sort
            for name, backends in routes.items()}, info=info)
        if version != self.version:
            self.version = version
            self._version_changed.set()  # heartbeat the new version now, not at the next tick
        return table

    async def _connections(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=3)
            return self._pool

    # ----- push and heartbeat -------------------------------------------------------------------------------------

    async def watch(self, wake: Callable[[], None]) -> None:
        """Start listening for route changes (`wake()` on each, and on every reconnect, since notifications sent
        while disconnected are lost) and heartbeating the served version. Returns at once; `close` stops both."""
        self._tasks = [asyncio.create_task(self._listen(wake), name="gateway-route-listener"),
                       asyncio.create_task(self._heartbeat(), name="gateway-heartbeat")]

    async def close(self) -> None:
        """Stop listening and heartbeating, and leave gateway_instances: a stopped gateway is not waited for."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.execute(
                    "DELETE FROM gateway_instances WHERE instance_id = $1", self.instance_id), timeout=2.0)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                log.warning("could not leave gateway_instances (its row expires by itself): %s", exc)
            await self._pool.close()
            self._pool = None

    async def _listen(self, wake: Callable[[], None]) -> None:
        delay = 0.2
        while True:
            connection: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self.dsn, timeout=5.0, server_settings={
                    "application_name": f"bud-gateway-listen {self.instance_id}"[:63]})
                connection.add_termination_listener(lambda _connection: lost.set())
                await connection.add_listener(CHANNEL, lambda *_args: wake())
                self.listening, delay = True, 0.2
                log.info("listening for route changes on %s", CHANNEL)
                wake()  # whatever changed while we were not listening
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=self.listen_check_s)
                    except asyncio.TimeoutError:
                        # a connection can die without closing (a network cut): ask it something now and then
                        await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=self.listen_check_s)
                log.warning("the route-change connection was closed; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection refused, terminated, timed out: retry with backoff
                log.warning("route-change listener lost (%s); reconnecting in %.1f s", exc, delay)
            finally:
                self.listening = False
                if connection is not None:
                    connection.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _heartbeat(self) -> None:
        failing = False
        while True:
            self._version_changed.clear()
            try:
                await (await self._connections()).execute(HEARTBEAT, self.instance_id, self.url, self.version or 0)
                if failing:
                    log.info("gateway heartbeat back")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the row ages out, and the next beat puts it back
                if not failing:
                    log.warning("gateway heartbeat failed: %s", exc)
                failing = True
            try:
                await asyncio.wait_for(self._version_changed.wait(), timeout=self.heartbeat_interval_s)
            except asyncio.TimeoutError:
                pass

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


def _position(row: asyncpg.Record) -> int:
    """Where a backend goes in its route's list: primaries first (-1), then fallbacks by their position, counted
    across endpoint and provider fallbacks together, so the balancer's first usable fallback is the first given."""
    if not row["fallback"]:
        return -1
    position = row["fallback_position"]
    return position if position is not None else 1 << 30


def from_environment() -> PostgresRouteSource:
    """BUD_DATABASE_URL; BUD_GATEWAY_ADVERTISE_URL (optional) is the URL reported beside the served version."""
    return PostgresRouteSource(get_settings().database_url, url=os.environ.get("BUD_GATEWAY_ADVERTISE_URL", ""))
