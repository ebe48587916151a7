"""Metering: one usage row per inference call (POST /v1/...) the gateway answers (401, 404 and 429 included), written
off the hot path. Model listings (GET /v1/models) are not metered.

Tokens are the answer's usage (the JSON body, or the final usage chunk of a stream). A stream the client left early
is recorded with status 499 and about one completion token per data event it received.

`record` appends a tuple to an in-memory buffer; a background task writes the buffer every `flush_interval_s` (1 s),
or as soon as `batch_rows` (500) are waiting, in one INSERT ... SELECT FROM unnest(...) ON CONFLICT (request_id) DO
NOTHING per batch (a batch retried after a timeout that had in fact committed inserts nothing twice).

When PostgreSQL is down or refuses, the rows stay buffered and are retried at the next tick; the buffer holds at
most `max_rows` (100 000) and drops the oldest beyond that, counting them in `bud_gateway_usage_rows_dropped_total`.
Shutdown (lifespan, SIGTERM under uvicorn) writes what is buffered before the process exits.

Requests that carried no valid key are recorded under the all-zero project id (no project's usage: the API filters
by project id), with no key id. Rows name the route the client asked for only when it is a route of the key's project
(other strings are cut to 200 characters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

import asyncpg

log = logging.getLogger("gateway.usage")

NO_PROJECT = "00000000-0000-0000-0000-000000000000"
INSERT = """
INSERT INTO usage_events (request_id, at, project_id, key_id, route, backend_kind, backend_id, prompt_tokens,
                          completion_tokens, status, ttft_ms, latency_ms)
SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[],
                     $8::integer[], $9::integer[], $10::integer[], $11::real[], $12::real[])
ON CONFLICT (request_id) DO NOTHING
"""
# One buffered row: (request_id, at epoch, project_id, key_id, route, backend_kind, backend_id, prompt_tokens,
#                    completion_tokens, status, ttft_ms, latency_ms)
Row = tuple[uuid.UUID, float, str, str | None, str, str, str, int, int, int, float | None, float]


class UsageRecorder:
    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        flush_interval_s: float = 1.0,
        batch_rows: int = 500,
        max_rows: int = 100_000,
        on_dropped: Callable[[int], None] = lambda n: None,
        on_written: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.dsn = dsn
        self.enabled = dsn is not None or pool is not None
        self.flush_interval_s = flush_interval_s
        self.batch_rows = batch_rows
        self.max_rows = max_rows
        self._pool = pool
        self._owns_pool = pool is None
        self._rows: deque[Row] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_dropped = on_dropped
        self.on_written = on_written
        self._last_error_log = 0.0
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._rows)

    # ----- request path -----------------------------------------------------------------------------------------

    def record(
        self,
        project_id: str | None,
        key_id: str | None,
        route: str,
        backend_kind: str,
        backend_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        status: int,
        ttft_ms: float | None,
        latency_ms: float,
    ) -> None:
        if not self.enabled:
            return
        rows = self._rows
        rows.append((uuid.uuid4(), time.time(), project_id or NO_PROJECT, key_id, route, backend_kind, backend_id,
                     prompt_tokens, completion_tokens, status, ttft_ms, latency_ms))  # fmt: skip
        if len(rows) > self.max_rows:
            rows.popleft()
            self.dropped += 1  # also tells a flush in progress that its oldest rows already left the buffer
            self.on_dropped(1)
        if len(rows) == self.batch_rows:
            self._wake.set()

    # ----- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="gateway-usage-writer")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the writer and write what is buffered (until `timeout_s`)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.enabled:
            deadline = time.monotonic() + timeout_s
            while self._rows and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.flush(), timeout=max(0.1, deadline - time.monotonic()))
                except Exception:
                    await asyncio.sleep(0.2)
            if self._rows:
                log.error("shutting down with %d usage rows not written", len(self._rows))
        if self._owns_pool and self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=5)
            self._pool = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                while self._rows:
                    if await self.flush() < self.batch_rows:
                        break
            except Exception as exc:  # database down: keep the rows, retry at the next tick
                now = time.monotonic()
                if now - self._last_error_log >= 10:
                    self._last_error_log = now
                    log.warning("usage rows not written (%d buffered), retrying: %s", len(self._rows), exc)

    # ----- writing ----------------------------------------------------------------------------------------------

    async def flush(self) -> int:
        """Write up to `batch_rows` buffered rows; returns how many. Raises (rows kept) when the database fails."""
        rows = self._rows
        if not rows:
            return 0
        count = min(len(rows), self.batch_rows)
        batch = [rows[i] for i in range(count)]
        dropped_before = self.dropped
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, timeout=5)
        columns: list[list] = [[] for _ in range(12)]
        for row in batch:
            for index, value in enumerate(row):
                columns[index].append(value)
        columns[1] = [datetime.fromtimestamp(t, UTC) for t in columns[1]]
        columns[2] = [_uuid_or(p, NO_PROJECT) for p in columns[2]]
        columns[3] = [_uuid_or(k, None) if k else None for k in columns[3]]
        await self._pool.execute(INSERT, *columns, timeout=10)
        # Rows appended meanwhile went to the right end; drop the written ones from the left (less those the
        # overflow already dropped while the statement ran).
        for _ in range(min(count - min(count, self.dropped - dropped_before), len(rows))):
            rows.popleft()
        self.written += count
        self.on_written(count)
        return count


@lru_cache(maxsize=4096)  # a handful of projects and keys, parsed for every row of every batch otherwise
def _uuid_or(value: str, default: str | None) -> uuid.UUID | None:
    """A project or key id as a UUID; ids that are not (a hand-written routes file) fall back to `default`."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.UUID(default) if default else None
