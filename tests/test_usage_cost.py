"""The realized cost arithmetic of control/usage.py with known prices and windows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from control.usage import (Lifetime, UsageCell, aggregate, catalog_price, gpu_cost, overlap_hours, per_mtok,
                           provider_cost)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PRICE = {"test-gpu": 2.0}.__getitem__


def test_two_gpus_at_two_dollars_for_half_an_hour_over_a_million_tokens_is_two_dollars_per_mtok():
    life = Lifetime(uuid.uuid4(), gpus=2, gpu_type="test-gpu", started_at=T0, stopped_at=T0 + timedelta(minutes=30))
    cost = gpu_cost([life], T0 - timedelta(hours=1), T0 + timedelta(hours=1), now=T0 + timedelta(hours=2),
                    price_of=PRICE)
    assert cost == pytest.approx(2.0)
    assert per_mtok(cost, 1_000_000) == pytest.approx(2.0)
    assert per_mtok(cost, 0) is None


def test_only_the_overlap_with_the_window_counts_and_a_running_replica_counts_until_now():
    assert overlap_hours(T0, T0 + timedelta(hours=2), T0 + timedelta(hours=1), T0 + timedelta(hours=3)) == 1
    assert overlap_hours(T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)) == 0
    running = Lifetime(uuid.uuid4(), gpus=1, gpu_type="test-gpu", started_at=T0, stopped_at=None)
    assert gpu_cost([running], T0, T0 + timedelta(hours=10), now=T0 + timedelta(hours=3),
                    price_of=PRICE) == pytest.approx(6.0)
    overridden = Lifetime(uuid.uuid4(), gpus=4, gpu_type="test-gpu", started_at=T0,
                          stopped_at=T0 + timedelta(hours=1), price_per_hour=0.5)
    assert gpu_cost([overridden], T0, T0 + timedelta(hours=1), now=T0, price_of=PRICE) == pytest.approx(2.0)


def test_the_gpu_price_comes_from_the_catalog():
    assert catalog_price("nvidia-h100-80gb") == catalog_price("h100_sxm") > 0
    assert catalog_price("no-such-gpu") == 0.0


def test_provider_tokens_cost_their_input_and_output_prices():
    assert provider_cost(2_000_000, 500_000, 1.0, 4.0) == pytest.approx(4.0)


def test_an_endpoints_gpu_cost_is_shared_by_tokens_and_idle_time_is_reported_apart():
    endpoint, idle = uuid.uuid4(), uuid.uuid4()
    lives = [Lifetime(endpoint, 2, "test-gpu", T0, T0 + timedelta(minutes=30)),
             Lifetime(idle, 1, "test-gpu", T0, T0 + timedelta(hours=1))]
    cells = [UsageCell("key-a", 0, "endpoint", str(endpoint), 3, 1, 600_000, 150_000),
             UsageCell("key-b", 0, "endpoint", str(endpoint), 1, 0, 200_000, 50_000),
             UsageCell("key-b", 0, "provider", "p/m", 1, 0, 1_000_000, 1_000_000)]
    report = aggregate(cells, lives, {"p/m": (1.0, 3.0)}, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2),
                       step_s=None, price_of=PRICE)
    by_group = {g.group: g.totals for g in report.groups}
    assert by_group["key-a"].cost_usd == pytest.approx(1.5)  # 3/4 of the endpoint's $2
    assert by_group["key-b"].cost_usd == pytest.approx(0.5 + 4.0)
    assert by_group["key-a"].errors == 1 and by_group["key-a"].requests == 3
    assert report.unattributed_gpu_usd == pytest.approx(2.0)  # the idle endpoint's hour
    assert report.totals.cost_usd == pytest.approx(6.0)


def test_buckets_split_gpu_time_and_usage_by_step():
    endpoint = uuid.uuid4()
    lives = [Lifetime(endpoint, 1, "test-gpu", T0, T0 + timedelta(hours=2))]
    cells = [UsageCell("r", 0, "endpoint", str(endpoint), 1, 0, 1_000_000, 0),
             UsageCell("r", 1, "endpoint", str(endpoint), 1, 0, 500_000, 0)]
    report = aggregate(cells, lives, {}, T0, T0 + timedelta(hours=2), T0 + timedelta(hours=3), step_s=3600,
                       price_of=PRICE)
    (group,) = report.groups
    assert group.buckets[0].realized_usd_per_mtok == pytest.approx(2.0)
    assert group.buckets[1].realized_usd_per_mtok == pytest.approx(4.0)
    assert group.totals.cost_usd == pytest.approx(4.0)
