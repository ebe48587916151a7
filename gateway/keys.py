"""Inference keys in memory: who may call which route, and with which limits, without a database round trip.

The table is a dict from the key's digest (sha256 of the whole key, core.inference_keys.digest) to what the gateway
needs per request. A background task asks PostgreSQL every `poll_interval_s` (0.5 s) for a change marker over
inference_keys and projects (newest updated_at, row count, newest revoked_at); only when it changed are all keys and
project quotas reloaded. A revocation, a new key or a quota change is therefore in force within about a second, and
when the database is down the last loaded table stays in force. Expiry is checked per request against the cached
expires_at, so a key stops working at its expiry to the second whatever the poll sees.

last_used_at is written by the same task, batched, at most once per key per minute: the request path only stores
the time in a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from core.inference_keys import digest

log = logging.getLogger("gateway.keys")

MARKER_QUERY = """
SELECT (SELECT row(max(updated_at), count(*), max(revoked_at), max(expires_at))::text FROM inference_keys),
       (SELECT row(max(updated_at), count(*))::text FROM projects WHERE monthly_token_quota IS NOT NULL)
"""
KEYS_QUERY = """
SELECT id, project_id, digest, routes, rpm, tpm, expires_at, revoked_at IS NOT NULL AS revoked
FROM inference_keys
"""
QUOTAS_QUERY = "SELECT id, monthly_token_quota FROM projects WHERE monthly_token_quota IS NOT NULL"
TOUCH_QUERY = """
UPDATE inference_keys k SET last_used_at = GREATEST(k.last_used_at, t.at)
FROM unnest($1::uuid[], $2::timestamptz[]) AS t (id, at)
WHERE k.id = t.id
"""
MAX_KEY_LENGTH = 512  # longer Authorization values are not hashed: nothing that long was ever issued
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key_id: str
    project_id: str
    routes: frozenset[str] | None  # None: every route of the project
    rpm: int | None
    tpm: int | None
    expires_at: float | None  # epoch seconds
    revoked: bool

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


class KeyStore:
    """The in-memory key table; `authenticate` is the only thing on the request path."""

    def __init__(self, keys: Iterable[tuple[str, KeyEntry]] = (), quotas: dict[str, int] | None = None) -> None:
        self.by_digest: dict[str, KeyEntry] = dict(keys)
        self.quotas: dict[str, int] = dict(quotas or {})
        self._used: dict[str, float] = {}  # key_id -> last request time not yet written
        self._written: dict[str, float] = {}  # key_id -> when last_used_at was last written

    def replace(self, keys: dict[str, KeyEntry], quotas: dict[str, int]) -> None:
        self.by_digest, self.quotas = keys, quotas

    def add_plaintext(self, plaintext: str, entry: KeyEntry) -> None:
        """For embedders and tests: register a key by its plaintext."""
        self.by_digest = {**self.by_digest, digest(plaintext): entry}

    def authenticate(self, authorization: bytes | None, now: float) -> KeyEntry | None:
        """The usable key an `Authorization: Bearer ...` header value names, or None (missing, unknown, revoked,
        expired: the caller answers all of them alike)."""
        if authorization is None or len(authorization) > MAX_KEY_LENGTH or authorization[:7].lower() != b"bearer ":
            return None
        try:
            token = authorization[7:].strip().decode("ascii")
        except UnicodeDecodeError:
            return None
        entry = self.by_digest.get(digest(token))
        if entry is None or not entry.usable(now):
            return None
        if now - self._written.get(entry.key_id, 0.0) >= TOUCH_EVERY_S:
            self._used[entry.key_id] = now
        return entry

    def take_used(self) -> dict[str, float]:
        used, self._used = self._used, {}
        return used

    def mark_written(self, used: dict[str, float]) -> None:
        self._written.update(used)

    def give_back(self, used: dict[str, float]) -> None:
        for key_id, at in used.items():
            if self._used.get(key_id, 0.0) < at:
                self._used[key_id] = at


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class PostgresKeySource:
    """Keeps a KeyStore in step with inference_keys and projects (see the module docstring)."""

    def __init__(self, dsn: str, store: KeyStore | None = None, *, poll_interval_s: float = 0.5) -> None:
        self.dsn = dsn
        self.store = store or KeyStore()
        self.poll_interval_s = poll_interval_s
        self.loaded = False
        self._pool: asyncpg.Pool | None = None
        self._marker: tuple[str | None, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = 0.0

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="gateway-key-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.write_last_used(), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=5)
            self._pool = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            await self.refresh()
            with contextlib.suppress(Exception):  # refresh already logged a database outage
                await self.write_last_used()

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2, timeout=5)
        return self._pool

    async def refresh(self) -> bool:
        """Reload when the marker moved; True when it did. A failing database keeps the last table."""
        try:
            pool = await self._connection_pool()
            async with pool.acquire() as connection:
                marker_row = await connection.fetchrow(MARKER_QUERY)
                marker = (marker_row[0], marker_row[1])
                if marker == self._marker:
                    return False
                async with connection.transaction(isolation="repeatable_read", readonly=True):
                    key_rows = await connection.fetch(KEYS_QUERY)
                    quota_rows = await connection.fetch(QUOTAS_QUERY)
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_error_log > 10:
                self._last_error_log = now
                log.error("inference keys not refreshed, keeping the last %d: %s", len(self.store.by_digest), exc)
            return False
        keys = {
            row["digest"]: KeyEntry(
                key_id=str(row["id"]),
                project_id=str(row["project_id"]),
                routes=frozenset(row["routes"]) if row["routes"] is not None else None,
                rpm=row["rpm"],
                tpm=row["tpm"],
                expires_at=_epoch(row["expires_at"]),
                revoked=row["revoked"],
            )
            for row in key_rows
        }
        quotas = {str(row["id"]): int(row["monthly_token_quota"]) for row in quota_rows}
        self.store.replace(keys, quotas)
        self._marker = marker
        if not self.loaded:
            log.info("inference keys loaded: %d keys, %d project quotas", len(keys), len(quotas))
        self.loaded = True
        return True

    async def write_last_used(self) -> int:
        used = self.store.take_used()
        if not used:
            return 0
        try:
            pool = await self._connection_pool()
            await pool.execute(
                TOUCH_QUERY, [UUID(k) for k in used], [datetime.fromtimestamp(t, UTC) for t in used.values()]
            )
        except Exception:
            self.store.give_back(used)
            raise
        self.store.mark_written(used)
        return len(used)
