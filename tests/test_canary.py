"""Canary analysis of a shift step: the decision rules (minimum traffic, noise band, absolute floor, no stable
traffic), the exact per-step figures read from usage rows in PostgreSQL, and the shift's bounds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from control.canary import SideStats, decide
from control.payloads.traffic import ShiftRequest, Slo
from control.store import canary as canary_store

SLO = Slo(max_ttft_p99_ms=5000, max_latency_p99_ms=60_000, min_requests=20)
STABLE = SideStats(requests=200, errors=0, ttft_p99_ms=100, tpot_p50_ms=10, latency_p99_ms=300, queue_depth=0)


def canary(**figures) -> SideStats:
    return SideStats(**({"requests": 50, "errors": 0, "ttft_p99_ms": 100, "tpot_p50_ms": 10, "latency_p99_ms": 300,
                         "queue_depth": 0} | figures))


def test_a_canary_within_the_noise_band_holds():
    # 100 ms x 1.1 + 20 ms = 130 ms; TPOT 10 ms x 1.1 + 5 ms = 16 ms
    decision = decide(canary(ttft_p99_ms=129, tpot_p50_ms=15.9), STABLE, SLO)
    assert decision.verdict == "held" and decision.reasons == []
    assert decision.baseline_from == "this step" and decision.baseline.ttft_p99_ms == 100


def test_a_slower_canary_fails_with_the_numbers():
    decision = decide(canary(ttft_p99_ms=131), STABLE, SLO)
    assert decision.verdict == "failed"
    assert decision.reasons == ["TTFT p99 131 ms > 130 ms (stable (this step) 100 ms x 1.1 + 20 ms)"]
    slow_tokens = decide(canary(tpot_p50_ms=17), STABLE, SLO)
    assert slow_tokens.verdict == "failed" and slow_tokens.reasons[0].startswith("TPOT p50 17.0 ms > 16.0 ms")


def test_errors_and_queue_depth_are_compared_too():
    erring = decide(canary(errors=2), STABLE, SLO)  # 4 % > 0 % + 1 %
    assert erring.verdict == "failed" and erring.reasons[0].startswith("error rate 4.0% > 1.0%")
    queued = decide(canary(queue_depth=3), STABLE, SLO)  # 3 > 0 x 1.1 + 2
    assert queued.verdict == "failed" and queued.reasons[0].startswith("queue depth 3.0 > 2.0")
    unread = decide(canary(queue_depth=None), STABLE, SLO)
    assert unread.verdict == "held"


def test_too_little_traffic_is_no_evidence():
    decision = decide(canary(requests=19), STABLE, SLO)
    assert decision.verdict == "insufficient"
    assert decision.reasons == ["only 19 requests reached the canary (at least 20 needed)"]
    assert decide(SideStats(), STABLE, SLO).verdict == "insufficient"  # a step that saw nothing never passes


def test_the_absolute_slo_is_a_floor_even_when_the_stable_version_is_as_slow():
    slow_stable = STABLE.model_copy(update={"ttft_p99_ms": 6000})
    decision = decide(canary(ttft_p99_ms=6000), slow_stable, SLO)
    assert decision.verdict == "failed"
    assert decision.reasons == ["TTFT p99 6000 ms > 5000 ms (absolute SLO)"]
    assert decide(canary(errors=5), STABLE.model_copy(update={"errors": 40}), SLO).reasons == [
        "error rate 10.0% > 5.0% (absolute SLO)"]


def test_without_stable_traffic_the_step_has_the_floor_only():
    idle_stable = SideStats(requests=3, ttft_p99_ms=10)  # at 100 % the stable version gets nothing, or a straggler
    decision = decide(canary(ttft_p99_ms=1000), idle_stable, SLO)
    assert decision.verdict == "held" and decision.baseline is None and decision.baseline_from is None
    assert decide(canary(ttft_p99_ms=5001), idle_stable, SLO).verdict == "failed"


def test_slo_bounds_name_the_field():
    for field, value in (("min_requests", 0), ("min_requests", 10**7), ("tolerance", -0.1), ("tolerance", 11),
                         ("slack_ms", -1), ("traffic_wait_s", 86_401), ("max_error_rate", 1.5)):
        with pytest.raises(ValidationError) as error:
            ShiftRequest.model_validate({"to_endpoint_id": str(uuid.uuid4()), "slo": {field: value}})
        assert error.value.errors()[0]["loc"] == ("slo", field), (field, value)
    assert Slo().min_requests == 20 and Slo().tolerance == 0.1 and Slo().slack_ms == 20


T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


async def test_window_figures_are_exact_per_request_percentiles(db_pool):
    project, canary_id, stable_id, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    rows = []
    for i in range(100):  # canary: TTFT 1..100 ms, 11 tokens, latency = TTFT + 10 x 2 ms
        rows.append((T0 + timedelta(seconds=1), project, "chat", str(canary_id), 200, float(i + 1), i + 1 + 20.0, 11))
    rows.append((T0 + timedelta(seconds=2), project, "chat", str(canary_id), 503, None, 5.0, 0))
    rows.append((T0 + timedelta(seconds=2), project, "chat", str(canary_id), 499, 3.0, 9.0, 2))
    for i in range(10):
        rows.append((T0 + timedelta(seconds=3), project, "chat", str(stable_id), 200, 1000.0, 1100.0, 1))
    # none of these count: outside the window, another route, another project, another endpoint
    rows.append((T0 + timedelta(seconds=61), project, "chat", str(canary_id), 200, 9e6, 9e6, 2))
    rows.append((T0 + timedelta(seconds=1), project, "other", str(canary_id), 200, 9e6, 9e6, 2))
    rows.append((T0 + timedelta(seconds=1), uuid.uuid4(), "chat", str(canary_id), 200, 9e6, 9e6, 2))
    rows.append((T0 + timedelta(seconds=1), project, "chat", str(other), 200, 9e6, 9e6, 2))
    async with db_pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO usage_events (request_id, at, project_id, route, backend_kind, backend_id, status, ttft_ms, "
            "latency_ms, completion_tokens) VALUES (gen_random_uuid(), $1, $2, $3, 'endpoint', $4, $5, $6, $7, $8)",
            rows)
        canary_side, stable_side = await canary_store.window_stats(
            conn, project, "chat", canary_id, [stable_id], T0, T0 + timedelta(seconds=60))
    assert canary_side.requests == 102 and canary_side.errors == 2
    assert canary_side.ttft_p99_ms == 99  # of the 100 answered: the 99th percentile exactly, no bucket bound
    assert canary_side.tpot_p50_ms == pytest.approx(2.0)
    assert canary_side.latency_p99_ms == 119
    assert stable_side.requests == 10 and stable_side.ttft_p99_ms == 1000 and stable_side.tpot_p50_ms is None
