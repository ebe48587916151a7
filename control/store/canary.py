"""Reads behind a traffic shift's canary analysis: the exact per-request timings the gateway wrote to usage_events
for a route's canary and stable endpoints over a window, and the shifts in flight."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from control.canary import SideStats

# An error is a 5xx answer or a request that ended early (the gateway writes 499 for a client that left).
WINDOW_STATS = """
SELECT backend_id = $3 AS canary, count(*) AS requests,
       count(*) FILTER (WHERE status >= 500 OR status = 499) AS errors,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY ttft_ms)
           FILTER (WHERE status < 400 AND ttft_ms IS NOT NULL) AS ttft_p99,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE status < 400) AS latency_p99,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (latency_ms - ttft_ms) / (completion_tokens - 1))
           FILTER (WHERE status < 400 AND ttft_ms IS NOT NULL AND completion_tokens > 1) AS tpot_p50
FROM usage_events
WHERE project_id = $1 AND route = $2 AND backend_kind = 'endpoint' AND backend_id = ANY($4::text[])
  AND at >= $5 AND at < $6
GROUP BY 1
"""


async def window_stats(conn: asyncpg.Connection, project_id: UUID, route: str, canary_id: UUID,
                       stable_ids: list[UUID], window_from: datetime,
                       window_to: datetime) -> tuple[SideStats, SideStats]:
    """(canary, stable) figures of the route's requests answered in [from, to): the stable endpoints together."""
    rows = await conn.fetch(WINDOW_STATS, project_id, route, str(canary_id),
                            [str(canary_id), *(str(e) for e in stable_ids)], window_from, window_to)
    sides = {True: SideStats(), False: SideStats()}
    for row in rows:
        sides[row["canary"]] = SideStats(
            requests=row["requests"], errors=row["errors"], ttft_p99_ms=row["ttft_p99"],
            latency_p99_ms=row["latency_p99"], tpot_p50_ms=row["tpot_p50"])
    return sides[True], sides[False]


async def running_shifts_to(conn: asyncpg.Connection, endpoint_id: UUID) -> list[str]:
    """Routes whose last recorded shift, still RUNNING, moves traffic to `endpoint_id`."""
    rows = await conn.fetch("SELECT name FROM routes WHERE shift->>'status' = 'RUNNING' "
                            "AND shift->>'to_endpoint_id' = $1 ORDER BY name", str(endpoint_id))
    return [row["name"] for row in rows]
