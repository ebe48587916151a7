"""Endpoint and replica choice, and route table parsing, without any network."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from gateway.balancer import Balancer
from gateway.cli import load_route_source
from gateway.routes import Backend, RouteTable
from gateway.sources import InMemoryRouteSource, JsonFileRouteSource, RouteSource


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_weights_split_exactly_and_interleave():
    blue = Backend(endpoint_id="blue", weight=90, replicas=["http://b"])
    green = Backend(endpoint_id="green", weight=10, replicas=["http://g"])
    balancer = Balancer()
    picks = [balancer.choose("m", [blue, green]).backend.endpoint_id for _ in range(200)]
    assert Counter(picks) == {"blue": 180, "green": 20}
    green_positions = [i for i, p in enumerate(picks) if p == "green"]
    assert max(b - a for a, b in zip(green_positions, green_positions[1:], strict=False)) <= 10  # spread, not bunched


def test_zero_weight_and_replica_less_endpoints_get_nothing():
    live = Backend(endpoint_id="live", weight=1, replicas=["http://a"])
    drained = Backend(endpoint_id="drained", weight=0, replicas=["http://b"])
    empty = Backend(endpoint_id="empty", weight=5, replicas=[])
    balancer = Balancer()
    assert {balancer.choose("m", [live, drained, empty]).backend.endpoint_id for _ in range(20)} == {"live"}
    assert balancer.choose("m", [drained, empty]) is None


def test_fallbacks_at_weight_zero_still_serve_first_usable_first():
    """The control plane stores fallbacks at weight 0: they take the requests the primaries cannot, in order."""
    first = Backend(endpoint_id="first", weight=0, replicas=["http://f"], fallback=True)
    second = Backend(endpoint_id="second", weight=0, replicas=["http://s"], fallback=True)
    balancer = Balancer()
    assert {balancer.choose("m", [first, second]).backend.endpoint_id for _ in range(10)} == {"first"}
    assert balancer.choose("m", [first, second], exclude={"http://f"}).backend.endpoint_id == "second"


def test_least_outstanding_replica_wins():
    backend = Backend(endpoint_id="e", replicas=["http://a", "http://b", "http://c"])
    balancer = Balancer()
    balancer.acquire("http://a")
    balancer.acquire("http://b")
    balancer.acquire("http://b")
    assert {balancer.choose("m", [backend]).replica for _ in range(5)} == {"http://c"}
    balancer.acquire("http://c")
    balancer.acquire("http://c")
    assert balancer.choose("m", [backend]).replica == "http://a"
    balancer.release("http://b")
    balancer.release("http://b")
    assert balancer.choose("m", [backend]).replica == "http://b"
    assert balancer.outstanding("http://b") == 0


def test_ties_rotate_over_idle_replicas():
    backend = Backend(endpoint_id="e", replicas=["http://a", "http://b"])
    balancer = Balancer()
    assert Counter(balancer.choose("m", [backend]).replica for _ in range(10)) == {"http://a": 5, "http://b": 5}


def test_down_replicas_are_skipped_until_their_time_is_up():
    clock = FakeClock()
    backend = Backend(endpoint_id="e", replicas=["http://a", "http://b"])
    balancer = Balancer(down_for_s=3.0, clock=clock)
    balancer.mark_down("http://a")
    assert {balancer.choose("m", [backend]).replica for _ in range(4)} == {"http://b"}
    assert balancer.choose("m", [backend], exclude={"http://b"}) is None
    clock.now += 3.0
    assert {balancer.choose("m", [backend]).replica for _ in range(4)} == {"http://a", "http://b"}


def test_an_endpoint_without_usable_replicas_yields_its_share():
    clock = FakeClock()
    blue = Backend(endpoint_id="blue", weight=50, replicas=["http://b"])
    green = Backend(endpoint_id="green", weight=50, replicas=["http://g"])
    balancer = Balancer(clock=clock)
    balancer.mark_down("http://g")
    assert {balancer.choose("m", [blue, green]).backend.endpoint_id for _ in range(10)} == {"blue"}


def test_route_table_normalizes_replica_urls_and_validates():
    table = RouteTable.model_validate(
        {"routes": {"m": [{"endpoint_id": "e", "weight": 2, "replicas": ["http://h:1/v1/", "http://h:2/"]}]}}
    )
    assert table.routes["m"][0].replicas == ("http://h:1", "http://h:2")
    assert table.replica_urls() == {"http://h:1", "http://h:2"}
    with pytest.raises(ValidationError):
        RouteTable.model_validate({"routes": {"m": [{"endpoint_id": "e", "weight": -1}]}})


async def test_json_file_source_reloads_on_change(tmp_path):
    path = tmp_path / "routes.json"
    source = JsonFileRouteSource(path)
    assert (await source.load()).routes == {}  # no file yet: no routes
    path.write_text('{"routes": {"a": [{"endpoint_id": "e", "replicas": ["http://x"]}]}}')
    assert set((await source.load()).routes) == {"a"}
    replacement = tmp_path / "routes.json.tmp"
    replacement.write_text('{"routes": {"b": [{"endpoint_id": "e", "replicas": ["http://x"]}]}}')
    replacement.replace(path)  # atomic swap, as writers should do
    assert set((await source.load()).routes) == {"b"}
    path.write_text('{"routes": ')
    with pytest.raises(ValidationError):
        await source.load()


def test_route_source_plugins_load_by_import_path():
    source = load_route_source("gateway.sources:InMemoryRouteSource")
    assert isinstance(source, InMemoryRouteSource) and isinstance(source, RouteSource)
    with pytest.raises(ValueError, match="module:callable"):
        load_route_source("gateway.sources")
    with pytest.raises(TypeError, match="no async load"):
        load_route_source("gateway.routes:RouteTable")
