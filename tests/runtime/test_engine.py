"""The simulated engine's scheduling and timing, in-process (no HTTP)."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.engine import RequestTiming, SimEngine
from runtime.settings import FaultState, TimingSettings


def make_engine(
    max_num_seqs: int = 2,
    kv: int = 10_000,
    ttft_ms: float = 20,
    tpot_ms: float = 10,
    factor: float = 0.0,
    finished: list[RequestTiming] | None = None,
) -> SimEngine:
    return SimEngine(
        max_num_seqs=max_num_seqs,
        kv_capacity_tokens=kv,
        timing=TimingSettings(ttft_ms=ttft_ms, tpot_ms=tpot_ms, ref_prompt_tokens=100, batch_tpot_factor=factor),
        faults=FaultState(),
        on_finish=finished.append if finished is not None else None,
    )


async def consume(engine: SimEngine, prompt_tokens: int, max_tokens: int) -> float:
    start = time.perf_counter()
    async for _ in engine.generate(prompt_tokens, max_tokens):
        pass
    return time.perf_counter() - start


async def test_lone_request_takes_ttft_plus_tokens_times_tpot():
    engine = make_engine(ttft_ms=40, tpot_ms=20)
    elapsed = await consume(engine, prompt_tokens=50, max_tokens=6)
    assert 0.14 <= elapsed < 0.30  # 40 ms + 5 x 20 ms


async def test_long_prompt_prefills_proportionally_longer():
    engine = make_engine(ttft_ms=30, tpot_ms=1)
    short = await consume(engine, prompt_tokens=100, max_tokens=1)
    long = await consume(engine, prompt_tokens=400, max_tokens=1)  # 4x the reference prompt
    assert 0.029 <= short < 0.1
    assert long >= 0.119 and long > 2.5 * short


async def test_requests_beyond_max_num_seqs_wait_in_arrival_order():
    finished: list[RequestTiming] = []
    engine = make_engine(max_num_seqs=2, ttft_ms=10, tpot_ms=20, finished=finished)
    tasks = [asyncio.create_task(consume(engine, 10, 5)) for _ in range(4)]
    await asyncio.sleep(0.03)
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 2)
    durations = await asyncio.gather(*tasks)
    assert engine.stats().running == engine.stats().waiting == 0
    # The two queued requests waited for a whole first request (~90 ms) before starting.
    assert max(durations[:2]) < min(durations[2:])
    assert min(durations[2:]) >= 0.17
    assert sum(1 for t in finished if t.queued_s > 0.05) == 2


async def test_kv_cache_admits_only_what_fits_and_empties_afterwards():
    engine = make_engine(max_num_seqs=8, kv=100, ttft_ms=5, tpot_ms=10)
    tasks = [asyncio.create_task(consume(engine, 40, 10)) for _ in range(3)]  # 50 tokens each, 100 fit
    await asyncio.sleep(0.03)
    stats = engine.stats()
    assert (stats.running, stats.waiting) == (2, 1)
    assert 0.8 < stats.kv_usage <= 1.0  # prompts plus tokens generated so far, of 100
    await asyncio.gather(*tasks)
    assert engine.stats().kv_tokens_in_use == 0


async def test_request_larger_than_the_cache_is_refused():
    engine = make_engine(kv=50)
    with pytest.raises(ValueError, match="KV cache"):
        await consume(engine, 45, 10)


async def test_cancelled_requests_free_their_slot_and_queue_place():
    engine = make_engine(max_num_seqs=1, ttft_ms=5, tpot_ms=50)
    running = asyncio.create_task(consume(engine, 10, 20))
    waiting = asyncio.create_task(consume(engine, 10, 20))
    third = asyncio.create_task(consume(engine, 10, 2))
    await asyncio.sleep(0.02)
    assert (engine.stats().running, engine.stats().waiting) == (1, 2)
    waiting.cancel()
    running.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert await asyncio.wait_for(third, 1.0) < 0.2  # promoted as soon as the slot freed
    assert engine.stats().kv_tokens_in_use == 0 and engine.stats().running == 0


async def test_full_batch_slows_each_token_by_the_occupancy_factor():
    engine = make_engine(max_num_seqs=4, ttft_ms=1, tpot_ms=20, factor=1.0)
    assert engine.decode_seconds(1) == pytest.approx(0.020)
    assert engine.decode_seconds(4) == pytest.approx(0.040)
    engine.faults.slowdown = 3.0
    assert engine.decode_seconds(1) == pytest.approx(0.060)
    assert engine.prefill_seconds(100) == pytest.approx(0.003)


async def test_busy_time_counts_only_while_a_batch_runs():
    engine = make_engine(ttft_ms=100, tpot_ms=1)
    assert engine.stats().busy_s == 0
    await asyncio.gather(consume(engine, 50, 1), consume(engine, 50, 1))  # two overlapping ~0.1 s requests
    after_first = engine.stats().busy_s
    assert 0.09 <= after_first < 0.3  # counted once, not once per request
    await asyncio.sleep(0.2)  # idle: no busy time accrues
    assert engine.stats().busy_s == after_first
    running = asyncio.create_task(consume(engine, 50, 1))
    await asyncio.sleep(0.05)
    assert engine.stats().busy_s > after_first  # the open busy period counts while it lasts
    await running
