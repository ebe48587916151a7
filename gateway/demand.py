"""Demand: when a request last arrived for each endpoint, written to PostgreSQL off the request path.

The gateway calls `note(endpoint_id)` for every request it routes to an endpoint backend: one it forwards, and one
that finds no ready replica (an endpoint scaled to zero). `note` only stores the time in a dict; a background task
writes the latest time of each endpoint noted since the last write to `endpoint_demand` once a second, in one
statement, so an endpoint's row changes at most once a second however many requests arrive, and no request ever
waits on the database.

The autoscaler reads that table: an endpoint allowed to scale to zero (`min_replicas: 0`) stops its last replica
once no request arrived for its `scale_to_zero_after_s`, and one at zero replicas gets a replica back at its next
sync after a note. When the database is down the latest times are kept (one entry per endpoint, so the memory is
bounded by the number of endpoints) and written once it answers again. Endpoint ids that are not UUIDs (a route
file's hand-written names) and ids of endpoints that no longer exist are dropped at the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

log = logging.getLogger("gateway.demand")

UPSERT = """
INSERT INTO endpoint_demand (endpoint_id, last_request_at)
SELECT t.endpoint_id, t.at
FROM unnest($1::uuid[], $2::timestamptz[]) AS t (endpoint_id, at)
JOIN endpoints e ON e.id = t.endpoint_id
ON CONFLICT (endpoint_id) DO UPDATE
SET last_request_at = GREATEST(endpoint_demand.last_request_at, EXCLUDED.last_request_at)
"""


class DemandRecorder:
    """Batches request times per endpoint and writes them to `endpoint_demand` every `flush_interval_s`.

    `dsn` opens a small pool of its own; `pool` shares one (not closed by `stop`); with neither, notes are ignored
    (a gateway serving a route file has no control plane to wake anything). Call `await start()` at startup and
    `await stop()` at shutdown (it writes what is pending).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.flush_interval_s = flush_interval_s
        self.enabled = dsn is not None or pool is not None
        self._pool = pool
        self._owns_pool = pool is None
        self._pending: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0  # statements that succeeded
        self.failed_writes = 0  # statements the database refused or could not take (retried next tick)
        self.dropped_ids = 0  # notes for ids that are not UUIDs

    # ----- request path -----------------------------------------------------------------------------------------

    def note(self, endpoint_id: str) -> None:
        """A request arrived for the endpoint now. Never blocks, never touches the database."""
        if self.enabled:
            self._pending[endpoint_id] = time.time()

    # ----- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="gateway-demand-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.enabled:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), timeout=5)
        if self._owns_pool and self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=5)
            self._pool = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    # ----- writing ----------------------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write what was noted since the last write; returns the number of endpoints written. On failure the times
        go back into the pending set (a newer note for the same endpoint wins) for the next tick."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        ids: list[UUID] = []
        times: list[datetime] = []
        for endpoint_id, at in batch.items():
            try:
                ids.append(UUID(endpoint_id))
            except ValueError:
                self.dropped_ids += 1
                continue
            times.append(datetime.fromtimestamp(at, UTC))
        if not ids:
            return 0
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=1)
            await self._pool.execute(UPSERT, ids, times)
        except Exception as exc:  # database down or refusing: keep the times, try again next tick
            self.failed_writes += 1
            log.warning("endpoint demand not written, retrying next tick: %s", exc)
            self._restore(batch)
            return 0
        except BaseException:  # cancelled mid-write (shutdown): the final flush writes them
            self._restore(batch)
            raise
        self.writes += 1
        return len(ids)

    def _restore(self, batch: dict[str, float]) -> None:
        for endpoint_id, at in batch.items():
            if self._pending.get(endpoint_id, 0.0) < at:
                self._pending[endpoint_id] = at


def from_environment() -> DemandRecorder:
    """A recorder writing to BUD_DATABASE_URL."""
    from core.settings import get_settings

    return DemandRecorder(get_settings().database_url)
