"""The limiter admits most requests of a key far from its limits without a Redis round trip, and stays exact near
them: two limiters (two gateways) on the session's real Redis share one large rpm limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as redis_asyncio

from gateway.limits import MIN_LOCAL_LIMIT, Limiter


async def script_calls(url: str) -> int:
    client = redis_asyncio.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))


async def one_minute_ahead() -> None:
    """Wait, if needed, so that what follows falls into one minute window."""
    while time.time() % 60 > 50:
        await asyncio.sleep(0.5)


async def test_two_gateways_share_a_large_rpm_limit_with_few_round_trips(redis_url):
    await one_minute_ahead()
    limit = 4 * MIN_LOCAL_LIMIT
    first, second = Limiter(redis_url, fresh_s=60), Limiter(redis_url, fresh_s=60)
    key, project = str(uuid.uuid4()), str(uuid.uuid4())
    calls_before = await script_calls(redis_url)
    admitted = refused = 0
    try:
        for sent in range(2 * limit):
            limiter = first if sent % 2 == 0 else second
            refusal = await limiter.admit(key, project, limit, None, None)
            admitted, refused = admitted + (refusal is None), refused + (refusal is not None)
            if sent % 20 == 19:  # both flush, as their background tasks do every 50 ms
                await first.flush()
                await second.flush()
        await first.flush()
        await second.flush()
        round_trips = await script_calls(redis_url) - calls_before
    finally:
        await first.stop()
        await second.stop()
    # Exact up to what the two admitted locally since their last flush (at most 10 each here).
    assert limit <= admitted <= limit + 20, admitted
    assert refused == 2 * limit - admitted
    # Far from the limit the requests went without a round trip: only keys near it (the last 10 %) and the
    # first request of each limiter asked Redis on the request path, plus every refusal.
    assert round_trips < 0.1 * limit + 2 + refused + 20, (round_trips, refused)
    assert round_trips < 2 * limit * 0.7


async def test_small_limits_are_always_checked_in_redis(redis_url):
    await one_minute_ahead()
    limiter = Limiter(redis_url, fresh_s=60)
    key, project = str(uuid.uuid4()), str(uuid.uuid4())
    before = await script_calls(redis_url)
    try:
        verdicts = [await limiter.admit(key, project, 5, None, None) for _ in range(8)]
    finally:
        await limiter.stop()
    assert [v is None for v in verdicts] == [True] * 5 + [False] * 3
    assert await script_calls(redis_url) - before == 8
