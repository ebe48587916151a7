"""Waiting until the gateways serve what was committed: the one place a publish (a deploy marking its endpoint
RUNNING, PUT /api/routes/{name}) learns that a client calling right now is routed.

Every commit that changes the route table bumps `route_table_version` (triggers, core/migrations); each gateway
reloads on the NOTIFY and heartbeats the version it serves into `gateway_instances` about every second. A gateway
counts as live while its last heartbeat is at most LIVE_WITHIN_S old (by the database's clock, so clocks of the
hosts never matter); one that stopped heartbeating is not waited for.

    propagation = await wait_for_gateways(conn)          # after the transaction committed
    if not propagation.propagated: ...                    # propagation.laggards name the gateways behind
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

LIVE_WITHIN_S = 3.0  # a gateway heartbeating within this long is running, and waited for
PUBLISH_WAIT_S = 10.0  # how long a publish waits for the gateways before it reports the laggards
CHECK_EVERY_S = 0.05


class LaggingGateway(BaseModel):
    model_config = ConfigDict(frozen=True)

    instance_id: str
    url: str = Field(description="as the gateway advertises itself; empty when it does not")
    route_table_version: int = Field(description="the version it serves, below the one committed")


class Propagation(BaseModel):
    model_config = ConfigDict(frozen=True)

    route_table_version: int = Field(description="the version committed, which every live gateway had to reach")
    propagated: bool = Field(description="every gateway running serves it (or none is running)")
    laggards: list[LaggingGateway] = Field(default_factory=list, description="live gateways still behind")


async def current_version(conn: asyncpg.Connection) -> int:
    """The route-table version now: at least that of every change committed before this call."""
    return await conn.fetchval("SELECT version FROM route_table_version")


async def lagging_gateways(conn: asyncpg.Connection, version: int,
                           live_within_s: float = LIVE_WITHIN_S) -> list[LaggingGateway]:
    rows = await conn.fetch(
        "SELECT instance_id, url, route_table_version FROM gateway_instances "
        "WHERE last_seen > now() - make_interval(secs => $1) AND route_table_version < $2 ORDER BY instance_id",
        live_within_s, version)
    return [LaggingGateway(**dict(row)) for row in rows]


async def wait_for_gateways(conn: asyncpg.Connection, version: int | None = None, *,
                            timeout_s: float = PUBLISH_WAIT_S, live_within_s: float = LIVE_WITHIN_S,
                            on_wait: Callable[[], None] | None = None) -> Propagation:
    """Until every live gateway serves `version` (default: the version now, so call it after the commit), at
    most `timeout_s`; never raises on a timeout: the answer says who lags. `on_wait` is called while waiting
    (an activity's heartbeat)."""
    if version is None:
        version = await current_version(conn)
    deadline = time.monotonic() + timeout_s
    while True:
        laggards = await lagging_gateways(conn, version, live_within_s)
        if not laggards:
            return Propagation(route_table_version=version, propagated=True)
        if time.monotonic() >= deadline:
            return Propagation(route_table_version=version, propagated=False, laggards=laggards)
        if on_wait is not None:
            on_wait()
        await asyncio.sleep(CHECK_EVERY_S)


def describe(propagation: Propagation) -> str:
    """One line naming the gateways behind, for logs and errors."""
    behind = ", ".join(f"{g.instance_id} ({g.url or 'no url'}) at {g.route_table_version}"
                       for g in propagation.laggards)
    return f"gateways not yet serving route table version {propagation.route_table_version}: {behind}"
