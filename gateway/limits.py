"""Rate limits and quotas shared by every gateway replica, kept in Redis.

Per key: requests per minute (rpm) and tokens per minute (tpm), over fixed one-minute windows (UTC minute
boundaries, so every replica agrees on the window without talking to the others). Per project: tokens per calendar
month (UTC). One Lua script per request checks all three and counts the request in one Redis round trip:

- a request is refused when its key already made `rpm` requests this minute, or already used `tpm` tokens this
  minute, or its project already used its monthly quota (tokens are known only when an answer completes, so the
  check is "already over", and one request may take the count past the limit);
- a refused request is not counted; an admitted one adds 1 to the minute's request counter at once;
- tokens (prompt + completion) are added when the answer completes, batched: `add_tokens` only sums them in memory,
  and a background task sends the sums every `flush_interval_s` (50 ms) in one pipeline.

A refusal is 429 with Retry-After: the seconds to the end of the window that is full (the minute, or the month).

Most requests skip the round trip. A Redis call on the request path costs more than a millisecond at 100 concurrent
streams (the reply waits for its turn on a busy event loop), so each gateway remembers the counts Redis last reported
for the keys it serves (refreshed by every flush, at most `fresh_s` old) and admits a request locally while the
count it knows plus what it admitted since stays under (1 - LOCAL_HEADROOM) of every limit, sending the request
counts with the token sums. Limits below MIN_LOCAL_LIMIT and keys close to a limit go through the script, so small
limits (and every key near its limit) are exact. Above that, several gateways can overshoot a limit by at most what
they admitted locally in one flush interval. Counts it does not know or that are stale (a key's first request, a
new month, a flush that came late) are read once for all the requests waiting on them (one MGET, not one script per
request), then judged as above. In the last second of each minute the flush also reads the next minute's counters,
so a minute boundary costs no round trip either.

Redis down or slow (a 250 ms socket timeout on the request path, 1 s for the background flush): requests are
admitted (fail open) rather than refused or failed; each failure adds to `bud_gateway_limit_store_errors_total`, a
warning is logged at most every 10 s, and for one second after a failure the gateway does not try Redis at all, so
an outage costs no latency. Token sums that could not be sent are dropped (counted in the same counter); the usage
rows in PostgreSQL remain the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

log = logging.getLogger("gateway.limits")

# KEYS: rpm counter, tpm counter, quota counter. ARGV: rpm limit, tpm limit, quota limit (0 = none), minute ttl.
# Returns {verdict, rpm count, tpm count, quota count}: verdict 0 when admitted, 1/2/3 when refused by rpm/tpm/quota;
# the counts as they stand after this request (so the gateway can admit the next ones locally).
ADMIT_SCRIPT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local used_rpm = tonumber(redis.call('GET', KEYS[1]) or '0')
local used_tpm = tonumber(redis.call('GET', KEYS[2]) or '0')
local used_quota = tonumber(redis.call('GET', KEYS[3]) or '0')
if rpm > 0 and used_rpm >= rpm then return {1, used_rpm, used_tpm, used_quota} end
if tpm > 0 and used_tpm >= tpm then return {2, used_rpm, used_tpm, used_quota} end
if quota > 0 and used_quota >= quota then return {3, used_rpm, used_tpm, used_quota} end
if rpm > 0 then
  used_rpm = redis.call('INCR', KEYS[1])
  if used_rpm == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4])) end
end
return {0, used_rpm, used_tpm, used_quota}
"""
MINUTE_TTL_S = 120  # a minute's counters outlive their minute a little (clock skew between replicas)
MONTH_TTL_S = 40 * 24 * 3600
LOCAL_HEADROOM = 0.1  # the share of a limit kept for exact (scripted) checks: see the module docstring
MIN_LOCAL_LIMIT = 100  # limits below this are always checked in Redis


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # "rpm", "tpm" or "quota"
    retry_after_s: int

    @property
    def message(self) -> str:
        if self.kind == "quota":
            return "The project's monthly token quota is used up."
        what = "requests" if self.kind == "rpm" else "tokens"
        return f"Rate limit reached for this key: {what} per minute. Retry after {self.retry_after_s} s."

    @property
    def error_type(self) -> str:
        return "insufficient_quota" if self.kind == "quota" else "rate_limit_error"


def _client(url: str, timeout_s: float, *, max_connections: int) -> redis_asyncio.Redis:
    return redis_asyncio.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=False,
        retry=None,
        health_check_interval=0,
        max_connections=max_connections,
        driver_info=None,  # no CLIENT SETINFO round trip (nor a package metadata lookup) per new connection
    )


def month_of(now: float) -> tuple[str, int]:
    """('YYYY-MM', seconds until the next month starts) for a UTC epoch time."""
    moment = datetime.fromtimestamp(now, UTC)
    following = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)
    return f"{moment.year:04d}-{moment.month:02d}", max(1, math.ceil(following.timestamp() - now))


class Limiter:
    """rpm/tpm per key and monthly tokens per project over one Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        on_error: Callable[[], None] = lambda: None,
        flush_interval_s: float = 0.05,
        socket_timeout_s: float = 0.25,
        flush_timeout_s: float = 1.0,
        prefix: str = "bud:",
        clock: Callable[[], float] = time.time,
        fresh_s: float = 0.25,
    ) -> None:
        self.redis = _client(url, socket_timeout_s, max_connections=256)
        # The flush is off the request path: a busy machine delaying its reply is no reason to fail open.
        self._background = _client(url, max(flush_timeout_s, socket_timeout_s), max_connections=2)
        self._admit = self.redis.register_script(ADMIT_SCRIPT)
        self.prefix = prefix
        self.flush_interval_s = flush_interval_s
        self.on_error = on_error
        self._clock = clock
        self._skip_until = 0.0
        self._last_log = 0.0
        self._pending: dict[str, int] = {}  # redis key -> requests or tokens to add
        self._known: dict[str, tuple[int, float]] = {}  # redis key -> (count Redis reported, when)
        self._watched: set[str] = set()  # keys admitted locally since the last flush: their counts are re-read
        self.fresh_s = fresh_s
        self._month_cache: tuple[int, str, float] = (-1, "", 0.0)  # (hour bucket, 'YYYY-MM', next month epoch)
        self._reads: dict[tuple[str, ...], asyncio.Future[bool]] = {}  # counts being read, shared by their waiters
        self._task: asyncio.Task[None] | None = None

    # ----- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-limit-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=1)
        for client in (self.redis, self._background):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    # ----- keys -------------------------------------------------------------------------------------------------

    def _month(self, now: float) -> tuple[str, float]:
        bucket = int(now // 3600)
        cached_bucket, label, following = self._month_cache
        if bucket != cached_bucket:
            label, seconds = month_of(now)
            following = now + seconds
            self._month_cache = (bucket, label, following)
        return label, following

    def _keys(self, key_id: str, project_id: str, now: float) -> tuple[str, str, str, int]:
        minute = int(now // 60)
        month, _ = self._month(now)
        p = self.prefix
        return f"{p}rpm:{key_id}:{minute}", f"{p}tpm:{key_id}:{minute}", f"{p}quota:{project_id}:{month}", minute

    # ----- request path -----------------------------------------------------------------------------------------

    async def admit(
        self, key_id: str, project_id: str, rpm: int | None, tpm: int | None, quota: int | None
    ) -> Refusal | None:
        """None to go ahead, or why not. Never raises: a failing Redis admits the request."""
        if rpm is None and tpm is None and quota is None:
            return None
        now = self._clock()
        if now < self._skip_until:
            return None
        rpm_key, tpm_key, quota_key, minute = self._keys(key_id, project_id, now)
        keys, limits = (rpm_key, tpm_key, quota_key), (rpm, tpm, quota)
        verdict = self._local_verdict(keys, limits, now)
        if verdict is None:
            stale = tuple(k for k, limit in zip(keys, limits, strict=True) if limit and not self._fresh(k, now))
            if not await self._read_counts(stale):
                return None  # Redis failed: fail open
            verdict = self._local_verdict(keys, limits, self._clock())
        if verdict:
            if rpm:
                self._pending[rpm_key] = self._pending.get(rpm_key, 0) + 1
            self._watched.update(keys)
            return None
        try:
            verdict, *counts = await self._admit(
                keys=[rpm_key, tpm_key, quota_key], args=[rpm or 0, tpm or 0, quota or 0, MINUTE_TTL_S]
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return None
        read_at = self._clock()
        for redis_key, count in zip((rpm_key, tpm_key, quota_key), counts, strict=True):
            self._known[redis_key] = (int(count), read_at)
        if verdict == 0:
            return None
        if verdict == 3:
            return Refusal("quota", max(1, math.ceil(self._month(now)[1] - now)))
        return Refusal("rpm" if verdict == 1 else "tpm", max(1, math.ceil((minute + 1) * 60 - now)))

    def _fresh(self, redis_key: str, now: float) -> bool:
        known = self._known.get(redis_key)
        return known is not None and now - known[1] <= self.fresh_s

    def _local_verdict(self, keys: tuple[str, ...], limits: tuple[int | None, ...], now: float) -> bool | None:
        """True: admit without asking Redis; False: ask the script (a small limit, or one close to its end);
        None: a count is unknown or stale (reading it may allow a local admission)."""
        verdict: bool | None = True
        for redis_key, limit in zip(keys, limits, strict=True):
            if not limit:
                continue
            if limit < MIN_LOCAL_LIMIT:
                return False
            known = self._known.get(redis_key)
            if known is None or now - known[1] > self.fresh_s:
                verdict = None
            elif known[0] + self._pending.get(redis_key, 0) >= limit * (1 - LOCAL_HEADROOM):
                return False
        return verdict

    async def _read_counts(self, keys: tuple[str, ...]) -> bool:
        """Read `keys`' counts into what this gateway knows, one MGET shared by every request waiting on the same
        keys. False when Redis failed (the failure is counted and Redis skipped for a second)."""
        if not keys:
            return True
        read = self._reads.get(keys)
        if read is None:
            read = self._reads[keys] = asyncio.ensure_future(self._mget(keys))
            read.add_done_callback(lambda _: self._reads.pop(keys, None))
        return await asyncio.shield(read)  # a waiter that leaves does not cancel the others' read

    async def _mget(self, keys: tuple[str, ...]) -> bool:
        try:
            counts = await self.redis.mget(keys)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return False
        read_at = self._clock()
        for redis_key, count in zip(keys, counts, strict=True):
            self._known[redis_key] = (int(count or 0), read_at)
        return True

    def add_tokens(self, key_id: str, project_id: str, tokens: int, *, tpm: bool, quota: bool) -> None:
        """Count an answer's tokens (sent to Redis by the background task)."""
        if tokens <= 0 or not (tpm or quota):
            return
        now = self._clock()
        _, tpm_key, quota_key, _ = self._keys(key_id, project_id, now)
        pending = self._pending
        if tpm:
            pending[tpm_key] = pending.get(tpm_key, 0) + tokens
        if quota:
            pending[quota_key] = pending.get(quota_key, 0) + tokens

    # ----- background -------------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send the summed request and token counts and read back the counts of the keys in use."""
        now = self._clock()
        self._known = {k: v for k, v in self._known.items() if now - v[1] <= self.fresh_s}
        if not self._pending and not self._watched:
            return
        batch, self._pending = self._pending, {}
        watched, self._watched = self._watched - batch.keys(), set()
        if now < self._skip_until:
            if batch:
                self.on_error()
            return
        read = [*watched, *self._next_minute(now, [*batch, *watched])]
        try:
            async with self._background.pipeline(transaction=False) as pipe:
                for key, count in batch.items():
                    pipe.incrby(key, count)
                    pipe.expire(key, MONTH_TTL_S if ":quota:" in key else MINUTE_TTL_S)
                for key in read:
                    pipe.get(key)
                replies = await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return
        read_at = self._clock()
        totals = replies[0 : 2 * len(batch) : 2]
        for key, total in zip([*batch, *read], [*totals, *replies[2 * len(batch) :]], strict=True):
            # Counts added locally after this pipeline went out are in _pending again and are added on top.
            self._known[key] = (int(total or 0), read_at)

    def _next_minute(self, now: float, keys: list[str]) -> list[str]:
        """In a minute's last second: the next minute's counters of the per-minute `keys` (read ahead)."""
        minute = int(now // 60)
        if now - minute * 60 < 59:
            return []
        this, following = f":{minute}", f":{minute + 1}"
        p = self.prefix
        return [k[: -len(this)] + following for k in keys
                if k.endswith(this) and (k.startswith(f"{p}rpm:") or k.startswith(f"{p}tpm:"))]  # fmt: skip

    def _failed(self, exc: BaseException) -> None:
        self.on_error()
        now = self._clock()
        self._skip_until = now + 1.0
        if now - self._last_log >= 10:
            self._last_log = now
            log.warning("limit store unreachable, admitting requests without limits: %s", exc or type(exc).__name__)
