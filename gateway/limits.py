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
# Returns 0 when admitted, 1/2/3 when refused by rpm/tpm/quota.
ADMIT_SCRIPT = """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
if rpm > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 1 end
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return 2 end
if quota > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= quota then return 3 end
if rpm > 0 then
  if redis.call('INCR', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4])) end
end
return 0
"""
MINUTE_TTL_S = 120  # a minute's counters outlive their minute a little (clock skew between replicas)
MONTH_TTL_S = 40 * 24 * 3600


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
        self._pending: dict[str, int] = {}  # redis key -> tokens to add
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
        try:
            verdict = await self._admit(
                keys=[rpm_key, tpm_key, quota_key], args=[rpm or 0, tpm or 0, quota or 0, MINUTE_TTL_S]
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            return None
        if verdict == 0:
            return None
        if verdict == 3:
            return Refusal("quota", max(1, math.ceil(self._month(now)[1] - now)))
        return Refusal("rpm" if verdict == 1 else "tpm", max(1, math.ceil((minute + 1) * 60 - now)))

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
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        if self._clock() < self._skip_until:
            self.on_error()
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, tokens in batch.items():
                    pipe.incrby(key, tokens)
                    pipe.expire(key, MONTH_TTL_S if ":quota:" in key else MINUTE_TTL_S)
                await pipe.execute()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.on_error()
        now = self._clock()
        self._skip_until = now + 1.0
        if now - self._last_log >= 10:
            self._last_log = now
            log.warning("limit store unreachable, admitting requests without limits: %s", exc or type(exc).__name__)
