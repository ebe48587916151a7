"""The limiter admits most requests of a key far from its limits without a Redis round trip, and stays exact near
them: two limiters (two gateways) on the session's real Redis share one large rpm limit."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as redis_asyncio

from gateway.limits import MIN_LOCAL_LIMIT, Limiter


async def calls(url: str, *commands: str) -> int:
    """How many times Redis ran these commands so far (all clients)."""
    client = redis_asyncio.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in commands)


async def script_calls(url: str) -> int:
    return await calls(url, "evalsha", "eval")


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


async def test_concurrent_first_requests_of_a_key_share_one_read(redis_url):
    await one_minute_ahead()
    limiter = Limiter(redis_url)
    key, project = str(uuid.uuid4()), str(uuid.uuid4())
    scripts, reads = await script_calls(redis_url), await calls(redis_url, "mget")
    try:
        verdicts = await asyncio.gather(*(limiter.admit(key, project, 10_000, 1_000_000, None) for _ in range(50)))
        await limiter.flush()
        counted = await limiter.redis.get(f"bud:rpm:{key}:{int(time.time() // 60)}")
    finally:
        await limiter.stop()
    assert verdicts == [None] * 50
    assert await script_calls(redis_url) - scripts == 0
    assert await calls(redis_url, "mget") - reads == 1
    assert int(counted) == 50  # admitted locally, and still counted for every gateway


async def test_a_minute_boundary_costs_no_round_trip(redis_url):
    now = [time.time() // 60 * 60 + 59.85]  # 150 ms before a minute ends
    limiter = Limiter(redis_url, clock=lambda: now[0])
    key, project = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        assert await limiter.admit(key, project, 10_000, None, None) is None
        await limiter.flush()  # the flush in the minute's last second reads the next minute's counter too
        now[0] += 0.2  # the next minute has begun; the counter read 200 ms ago is still fresh
        scripts, reads = await script_calls(redis_url), await calls(redis_url, "mget")
        assert await limiter.admit(key, project, 10_000, None, None) is None
        assert await script_calls(redis_url) - scripts == 0
        assert await calls(redis_url, "mget") - reads == 0
        await limiter.flush()
        counted = await limiter.redis.get(f"bud:rpm:{key}:{int(now[0] // 60)}")
    finally:
        await limiter.stop()
    assert int(counted) == 1
