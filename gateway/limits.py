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
counts with the token sums. Limits below MIN_LOCAL_LIMIT, counts it does not know or that are stale, and keys close
to a limit go through the script, so small limits (and every key near its limit) are exact. Above that, several
gateways can overshoot a limit by at most what they admitted locally in one flush interval.

Redis down or slow (a 250 ms socket timeout): requests are admitted (fail open) rather than refused or failed; each
failure adds to `bud_gateway_limit_store_errors_total`, a warning is logged at most every 10 s, and for one second
after a failure the gateway does not try Redis at all, so an outage costs no latency. Token sums that could not be
sent are dropped (counted in the same counter); the usage rows in PostgreSQL remain the record.
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
        prefix: str = "bud:",
        clock: Callable[[], float] = time.time,
        fresh_s: float = 0.25,
    ) -> None:
        self.redis = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
            max_connections=256,
        )
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
        with contextlib.suppress(Exception):
            await self.redis.aclose()

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
        if self._clear(rpm_key, rpm, now) and self._clear(tpm_key, tpm, now) and self._clear(quota_key, quota, now):
            if rpm:
                self._pending[rpm_key] = self._pending.get(rpm_key, 0) + 1
            self._watched.update((rpm_key, tpm_key, quota_key))
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

    def _clear(self, redis_key: str, limit: int | None, now: float) -> bool:
        """Whether this gateway may admit against `limit` without asking Redis (see the module docstring)."""
        if not limit:
            return True
        if limit < MIN_LOCAL_LIMIT:
            return False
        known = self._known.get(redis_key)
        if known is None or now - known[1] > self.fresh_s:
            return False
        return known[0] + self._pending.get(redis_key, 0) < limit * (1 - LOCAL_HEADROOM)

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
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, count in batch.items():
                    pipe.incrby(key, count)
                    pipe.expire(key, MONTH_TTL_S if ":quota:" in key else MINUTE_TTL_S)
                for key in watched:
                    pipe.get(key)
                replies = await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return
        read_at = self._clock()
        totals = replies[0 : 2 * len(batch) : 2]
        for key, total in zip([*batch, *watched], [*totals, *replies[2 * len(batch) :]], strict=True):
            # Counts added locally after this pipeline went out are in _pending again and are added on top.
            self._known[key] = (int(total or 0), read_at)

    def _failed(self, exc: BaseException) -> None:
        self.on_error()
        now = self._clock()
        self._skip_until = now + 1.0
        if now - self._last_log >= 10:
            self._last_log = now
            log.warning("limit store unreachable, admitting requests without limits: %s", exc or type(exc).__name__)
