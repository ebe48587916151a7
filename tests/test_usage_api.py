"""GET /api/usage: the gateway's usage rows and the endpoints' GPU time of one project, grouped and priced exactly
(rows inserted directly, in a window fixed in the past); bounds; tenancy; replica lifetimes kept by the store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from control.payloads.deployments import ReplicaState
from control.store import endpoints as endpoint_store
from tests.inference_helpers import bearer, create_provider, new_project, running_endpoint_row

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WINDOW = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}


async def insert_event(conn, project, at, route, kind, backend_id, prompt, completion, status=200, key=None):
    await conn.execute(
        "INSERT INTO usage_events (request_id, at, project_id, key_id, route, backend_kind, backend_id, "
        "prompt_tokens, completion_tokens, status, latency_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 12)",
        uuid.uuid4(), at, project, key, route, kind, backend_id, prompt, completion, status)


@pytest.fixture
async def priced_project(api, anon_api, db_pool):
    """A project with an endpoint (2 GPUs at $2/h, up 30 minutes of the window), a provider at $1/$3 per Mtok,
    two keys and usage rows: the endpoint serves 1M tokens, the provider 1M prompt + 1M completion."""
    project, member = await new_project(api)
    endpoint_id, endpoint_name = await running_endpoint_row(db_pool, project, gpu_count=2, price_per_hour=2.0)
    provider = await create_provider(anon_api, member, price_in=1.0, price_out=3.0)
    keys = []
    for name in ("app-a", "app-b"):
        keys.append((await anon_api.post(f"/api/projects/{project}/api-keys", json={"name": name},
                                         headers=bearer(member))).json()["id"])
    provider_backend = f"{provider['id']}/model-a"
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO replica_lifetimes (endpoint_id, replica, gpus, gpu_type, started_at, stopped_at) "
            "VALUES ($1, 'r0', 2, 'nvidia-h100-80gb', $2, $3)",
            uuid.UUID(endpoint_id), T0 + timedelta(minutes=10), T0 + timedelta(minutes=40))
        at = T0 + timedelta(minutes=5)
        for prompt, completion, status in ((300_000, 50_000, 200), (300_000, 100_000, 200), (0, 0, 500)):
            await insert_event(conn, project, at, "chat", "endpoint", endpoint_id, prompt, completion, status, keys[0])
        await insert_event(conn, project, T0 + timedelta(minutes=35), "chat", "endpoint", endpoint_id,
                           200_000, 50_000, key=keys[1])
        await insert_event(conn, project, T0 + timedelta(minutes=35), "hosted", "provider", provider_backend,
                           1_000_000, 1_000_000, key=keys[1])
        await insert_event(conn, project, T0 + timedelta(minutes=50), "chat", "none", "", 0, 0, status=503)
        # Outside the window, and another project's row inside it: neither counts.
        await insert_event(conn, project, T0 + timedelta(hours=2), "chat", "endpoint", endpoint_id, 10**6, 10**6)
        await insert_event(conn, uuid.uuid4(), at, "chat", "endpoint", endpoint_id, 10**6, 10**6)
    return {"project": project, "member": member, "endpoint": endpoint_id, "endpoint_name": endpoint_name,
            "provider": provider, "provider_backend": provider_backend, "keys": keys}


async def usage(anon_api, token, **params):
    response = await anon_api.get("/api/usage", params=WINDOW | params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


async def test_usage_by_backend_prices_gpu_time_and_provider_tokens(anon_api, priced_project):
    p = priced_project
    report = await usage(anon_api, p["member"], group_by="backend")
    groups = {g["group"]: g for g in report["groups"]}
    endpoint = groups[f"endpoint:{p['endpoint']}"]
    # 2 GPUs x $2/h x 30 min = $2 over 1M tokens = $2/Mtok.
    assert endpoint["requests"] == 4 and endpoint["errors"] == 1 and endpoint["name"] == p["endpoint_name"]
    assert endpoint["prompt_tokens"] == 800_000 and endpoint["completion_tokens"] == 200_000
    assert endpoint["cost_usd"] == pytest.approx(2.0) and endpoint["realized_usd_per_mtok"] == pytest.approx(2.0)
    provider = groups[f"provider:{p['provider_backend']}"]
    assert provider["cost_usd"] == pytest.approx(1.0 + 3.0) and provider["realized_usd_per_mtok"] == pytest.approx(2.0)
    assert provider["name"] == f"{p['provider']['name']}/model-a"
    unrouted = groups["none:"]
    assert unrouted["requests"] == 1 and unrouted["errors"] == 1 and unrouted["cost_usd"] == 0
    assert report["totals"]["requests"] == 6 and report["totals"]["cost_usd"] == pytest.approx(6.0)
    assert report["unattributed_gpu_usd"] == 0 and report["step_s"] is None


async def test_usage_by_key_shares_the_endpoints_cost_by_tokens(anon_api, priced_project):
    p = priced_project
    groups = {g["group"]: g for g in (await usage(anon_api, p["member"], group_by="key"))["groups"]}
    first, second = (groups[key] for key in p["keys"])
    assert first["name"] == "app-a" and first["requests"] == 3 and first["errors"] == 1
    assert first["cost_usd"] == pytest.approx(2.0 * 750_000 / 1_000_000)
    assert second["cost_usd"] == pytest.approx(2.0 * 250_000 / 1_000_000 + 4.0)
    assert groups[""]["requests"] == 1  # the request that came without a key


async def test_usage_by_project_and_route(anon_api, priced_project):
    p = priced_project
    (project,) = (await usage(anon_api, p["member"], group_by="project"))["groups"]
    assert project["group"] == p["project"] and project["requests"] == 6
    assert project["cost_usd"] == pytest.approx(6.0)
    routes = {g["group"]: g for g in (await usage(anon_api, p["member"], group_by="route"))["groups"]}
    assert routes["chat"]["requests"] == 5 and routes["chat"]["cost_usd"] == pytest.approx(2.0)
    assert routes["hosted"]["cost_usd"] == pytest.approx(4.0)


async def test_an_idle_endpoints_gpu_time_is_charged_to_the_project_or_reported_apart(api, anon_api, db_pool):
    project, member = await new_project(api)
    endpoint_id, _ = await running_endpoint_row(db_pool, project, gpu_count=1, price_per_hour=3.0)
    async with db_pool.acquire() as conn:  # running since before the window: the whole hour counts
        await conn.execute("INSERT INTO replica_lifetimes (endpoint_id, replica, gpus, gpu_type, started_at) "
                           "VALUES ($1, 'r0', 1, 'nvidia-h100-80gb', $2)", uuid.UUID(endpoint_id),
                           T0 - timedelta(days=1))
    (project_group,) = (await usage(anon_api, member, group_by="project"))["groups"]
    assert project_group["cost_usd"] == pytest.approx(3.0) and project_group["requests"] == 0
    (backend,) = (await usage(anon_api, member, group_by="backend"))["groups"]
    assert backend["group"] == f"endpoint:{endpoint_id}" and backend["realized_usd_per_mtok"] is None
    by_key = await usage(anon_api, member, group_by="key")
    assert by_key["groups"] == [] and by_key["unattributed_gpu_usd"] == pytest.approx(3.0)


async def test_a_time_series_splits_usage_and_gpu_time_into_buckets(anon_api, priced_project):
    p = priced_project
    report = await usage(anon_api, p["member"], group_by="backend", step=1800)
    endpoint = next(g for g in report["groups"] if g["group"] == f"endpoint:{p['endpoint']}")
    first, second = endpoint["buckets"]
    assert first["start"].startswith("2026-03-01T12:00:00") and second["start"].startswith("2026-03-01T12:30:00")
    # The replica ran 20 minutes of the first half hour and 10 of the second.
    assert first["cost_usd"] == pytest.approx(2 * 2.0 * 20 / 60) and first["requests"] == 3
    assert second["cost_usd"] == pytest.approx(2 * 2.0 * 10 / 60) and second["requests"] == 1
    assert first["cost_usd"] + second["cost_usd"] == pytest.approx(endpoint["cost_usd"])


async def test_usage_stays_in_the_callers_project(api, anon_api, priced_project):
    _, stranger = await new_project(api)
    for group_by in ("project", "key", "route", "backend"):
        report = await usage(anon_api, stranger, group_by=group_by)
        assert report["groups"] == [] and report["totals"]["requests"] == 0
    p = priced_project
    reader = (await anon_api.post(f"/api/projects/{p['project']}/tokens", json={"name": "r", "role": "read-only"},
                                  headers=bearer(p["member"]))).json()["token"]
    assert (await usage(anon_api, reader))["totals"]["requests"] == 6


async def test_usage_bounds_are_refused_with_the_parameter_named(api, anon_api):
    _, member = await new_project(api)
    cases = [
        ({"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-04-05T00:00:00Z"}, "from"),  # over 93 days
        ({"step": 59}, "step"),
        ({"step": 86_401}, "step"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "step": 60}, "step"),  # too many buckets
        ({"group_by": "model"}, "group_by"),
        ({"from": "yesterday"}, "from"),
        ({"step": "often"}, "step"),
    ]
    for params, field in cases:
        refused = await anon_api.get("/api/usage", params=params, headers=bearer(member))
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == field, (params, refused.text)
    default = await anon_api.get("/api/usage", headers=bearer(member))
    assert default.status_code == 200
    window = datetime.fromisoformat(default.json()["to"]) - datetime.fromisoformat(default.json()["from"])
    assert window == timedelta(hours=24) and default.json()["group_by"] == "project"


async def test_recording_replicas_keeps_their_gpu_lifetimes(api, db_pool):
    project, _ = await new_project(api)
    endpoint_id, _ = await running_endpoint_row(db_pool, project, gpu_count=4)
    endpoint = uuid.UUID(endpoint_id)

    def replicas(*names):
        return [ReplicaState(name=name, ready=True, url=f"http://127.0.0.1:1/{name}") for name in names]

    async with db_pool.acquire() as conn:
        await endpoint_store.replace_replicas(conn, endpoint, replicas("r0", "r1"))
        await endpoint_store.replace_replicas(conn, endpoint, replicas("r0", "r1"))  # unchanged: same lifetimes
        open_rows = await conn.fetch("SELECT replica, gpus, gpu_type FROM replica_lifetimes "
                                     "WHERE endpoint_id = $1 AND stopped_at IS NULL ORDER BY replica", endpoint)
        assert [tuple(r) for r in open_rows] == [("r0", 4, "nvidia-h100-80gb"), ("r1", 4, "nvidia-h100-80gb")]
        await endpoint_store.replace_replicas(conn, endpoint, replicas("r0"))
        states = await conn.fetch("SELECT replica, stopped_at IS NULL AS running FROM replica_lifetimes "
                                  "WHERE endpoint_id = $1 ORDER BY replica", endpoint)
        assert [tuple(r) for r in states] == [("r0", True), ("r1", False)]
        # One Service row standing for three pods (Kubernetes): each pod holds its GPUs.
        await endpoint_store.replace_replicas(conn, endpoint, replicas("svc"), pods=3)
        pods = await conn.fetch("SELECT replica FROM replica_lifetimes WHERE endpoint_id = $1 AND stopped_at IS NULL "
                                "ORDER BY replica", endpoint)
        assert [r["replica"] for r in pods] == ["svc#0", "svc#1", "svc#2"]
        await endpoint_store.remove_from_routing(conn, endpoint)
        assert await conn.fetchval("SELECT count(*) FROM replica_lifetimes WHERE endpoint_id = $1 "
                                   "AND stopped_at IS NULL", endpoint) == 0
        assert await conn.fetchval("SELECT count(*) FROM replica_lifetimes WHERE endpoint_id = $1", endpoint) == 5
