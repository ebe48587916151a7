"""External providers through the API: the key sealed at rest and never shown (responses, 422 errors, logs),
hostile base URLs refused, tenancy, deletion refused while a route uses one; routes mixing endpoints, providers
and fallbacks."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import unique
from tests.inference_helpers import PUBLIC_BASE_URL, bearer, create_provider, new_project, running_endpoint_row

SECRET = "sk-live-DO-NOT-LEAK-8c1f9a77e2"


def provider_body(**overrides) -> dict:
    return {"name": unique("prov"), "kind": "openai-compatible", "base_url": PUBLIC_BASE_URL, "api_key": SECRET,
            "models": ["gpt-x"], "price_per_mtok": {"input": 0.5, "output": 1.5}} | overrides


async def test_the_key_is_sealed_and_never_returned(api, anon_api, db_pool, settings):
    project, member = await new_project(api)
    created = await anon_api.post("/api/providers", json=provider_body(), headers=bearer(member))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["api_key_set"] is True and "api_key" not in body and SECRET not in created.text
    assert body["project_id"] == project and body["price_per_mtok"] == {"input": 0.5, "output": 1.5}
    listed = await anon_api.get("/api/providers", headers=bearer(member))
    one = await anon_api.get(f"/api/providers/{body['id']}", headers=bearer(member))
    assert listed.status_code == one.status_code == 200
    assert [p["id"] for p in listed.json()] == [body["id"]] and one.json()["name"] == body["name"]
    assert SECRET not in listed.text and SECRET not in one.text
    async with db_pool.acquire() as conn:
        sealed = await conn.fetchval("SELECT api_key_sealed FROM providers WHERE id = $1", body["id"])
    assert SECRET not in sealed and settings.secret_box().open(sealed) == SECRET


async def test_a_refused_body_never_echoes_the_key_and_the_log_never_holds_it(api, anon_api, capfd, caplog):
    _, member = await new_project(api)
    caplog.set_level(logging.DEBUG)
    refusals = [
        provider_body(api_key=SECRET + "x" * 5000),               # the key itself too long
        provider_body(name="Not A Name"),                         # another field wrong, the key beside it
        provider_body(price_per_mtok={"input": -1, "output": 1}),
        provider_body(base_url="https://127.0.0.1/v1"),
        provider_body(api_key=""),
        provider_body(api_key=SECRET + "\r\nX-Injected: 1"),     # would break the provider's request header
        provider_body(models=[]),
        provider_body(kind="anthropic"),
        provider_body(extra=SECRET),
    ]
    for body in refusals:
        refused = await anon_api.post("/api/providers", json=body, headers=bearer(member))
        assert refused.status_code == 422, refused.text
        assert SECRET not in refused.text, refused.text
    assert (await anon_api.post("/api/providers", json=provider_body(), headers=bearer(member))).status_code == 201
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err + caplog.text


@pytest.mark.parametrize("base_url", [
    "http://api.example.com/v1", "https://127.0.0.1/v1", "https://[::1]/v1", "https://[::ffff:127.0.0.1]/v1",
    "https://0.0.0.0/v1", "https://169.254.169.254/latest", "https://10.0.0.8/v1", "https://2130706433/v1",
    "https://0x7f000001/v1", "https://localhost:8080/v1", "https://user:pw@8.8.8.8/v1", "https://8.8.8.8/v1#x",
    "https://8.8.8.8/" + "a" * 3000, "https://[fe80::1]/v1", "https://224.0.0.1/v1", "file:///etc/passwd",
])
async def test_hostile_base_urls_are_refused_naming_base_url(api, anon_api, base_url):
    _, member = await new_project(api)
    refused = await anon_api.post("/api/providers", json=provider_body(base_url=base_url), headers=bearer(member))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "base_url"
    assert (await anon_api.get("/api/providers", headers=bearer(member))).json() == []


async def test_an_administrator_may_allow_private_provider_urls(api, app, anon_api):
    _, member = await new_project(api)
    body = provider_body(base_url="http://127.0.0.1:9/v1")
    assert (await anon_api.post("/api/providers", json=body, headers=bearer(member))).status_code == 422
    original = app.state.settings
    app.state.settings = original.model_copy(update={"provider_allow_private_urls": True})
    try:
        allowed = await anon_api.post("/api/providers", json=body, headers=bearer(member))
    finally:
        app.state.settings = original
    assert allowed.status_code == 201 and allowed.json()["base_url"] == "http://127.0.0.1:9/v1"


async def test_providers_stay_in_their_project(api, anon_api):
    _, member = await new_project(api)
    _, stranger = await new_project(api)
    mine = await create_provider(anon_api, member, name="shared-name")
    assert (await anon_api.get(f"/api/providers/{mine['id']}", headers=bearer(stranger))).status_code == 404
    assert (await anon_api.delete(f"/api/providers/{mine['id']}", headers=bearer(stranger))).status_code == 404
    assert (await anon_api.get("/api/providers", headers=bearer(stranger))).json() == []
    await create_provider(anon_api, stranger, name="shared-name")  # names are per project
    again = await anon_api.post("/api/providers", json=provider_body(name="shared-name"), headers=bearer(member))
    assert again.status_code == 409 and again.json()["error"]["details"]["field"] == "name"
    assert (await anon_api.get(f"/api/providers/{mine['id']}", headers=bearer(member))).status_code == 200


async def test_read_only_tokens_see_providers_but_do_not_change_them(api, anon_api):
    project, member = await new_project(api)
    provider = await create_provider(anon_api, member)
    reader = (await anon_api.post(f"/api/projects/{project}/tokens", json={"name": "r", "role": "read-only"},
                                  headers=bearer(member))).json()["token"]
    assert (await anon_api.get("/api/providers", headers=bearer(reader))).status_code == 200
    assert (await anon_api.post("/api/providers", json=provider_body(), headers=bearer(reader))).status_code == 403
    assert (await anon_api.delete(f"/api/providers/{provider['id']}", headers=bearer(reader))).status_code == 403


async def test_a_route_mixes_endpoints_and_providers_with_fallbacks(api, anon_api, db_pool):
    project, member = await new_project(api)
    endpoint_id, endpoint_name = await running_endpoint_row(db_pool, project)
    spare_id, spare_name = await running_endpoint_row(db_pool, project)
    hosted = await create_provider(anon_api, member, api_key=SECRET)
    route = unique("chat")
    put = await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"endpoint_id": endpoint_id, "weight": 70},
                     {"provider_id": hosted["id"], "model": "model-a", "weight": 30}],
        "fallbacks": [{"provider_id": hosted["id"], "model": "model-b"}, {"endpoint_id": spare_id}],
        "spill_queue_depth": 8})
    assert put.status_code == 200, put.text
    shown = (await anon_api.get(f"/api/routes/{route}", headers=bearer(member)))
    assert SECRET not in shown.text
    body = shown.json()
    assert body["spill_queue_depth"] == 8
    assert {(b["kind"], b.get("endpoint_name") or f"{b['provider_name']}/{b['model']}", b["weight"])
            for b in body["backends"]} == {("endpoint", endpoint_name, 70),
                                           ("provider", f"{hosted['name']}/model-a", 30)}
    assert {(b["kind"], b.get("endpoint_name") or b["model"]) for b in body["fallbacks"]} == {
        ("provider", "model-b"), ("endpoint", spare_name)}
    async with db_pool.acquire() as conn:
        flags = await conn.fetch("SELECT model, weight, fallback FROM route_provider_backends WHERE route_name = $1 "
                                 "ORDER BY model", route)
    assert [tuple(row) for row in flags] == [("model-a", 30, False), ("model-b", 0, True)]

    # An old-style body changes the primaries and keeps the fallbacks and the spill depth.
    again = await anon_api.put(f"/api/routes/{route}", headers=bearer(member),
                               json={"backends": [{"endpoint_id": endpoint_id, "weight": 100}]})
    assert again.status_code == 200, again.text
    assert [b["kind"] for b in again.json()["backends"]] == ["endpoint"]
    assert len(again.json()["fallbacks"]) == 2 and again.json()["spill_queue_depth"] == 8
    cleared = await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"provider_id": hosted["id"], "model": "model-a", "weight": 100}], "fallbacks": [],
        "spill_queue_depth": None})
    assert cleared.status_code == 200 and cleared.json()["fallbacks"] == []
    assert cleared.json()["spill_queue_depth"] is None and cleared.json()["backends"][0]["kind"] == "provider"
    listed = await anon_api.get("/api/routes", headers=bearer(member))
    assert [r["name"] for r in listed.json()] == [route]


async def test_route_backends_are_checked(api, anon_api, db_pool):
    project, member = await new_project(api)
    _, stranger = await new_project(api)
    endpoint_id, _ = await running_endpoint_row(db_pool, project)
    mine = await create_provider(anon_api, member)
    theirs = await create_provider(anon_api, stranger)
    route = unique("chat")
    cases = [
        ({"backends": [{"provider_id": theirs["id"], "model": "model-a", "weight": 100}]}, "backends.0.provider_id"),
        ({"backends": [{"provider_id": mine["id"], "model": "nope", "weight": 100}]}, "backends.0.model"),
        ({"backends": [{"provider_id": mine["id"], "weight": 100}]}, "backends.0"),
        ({"backends": [{"endpoint_id": endpoint_id, "provider_id": mine["id"], "model": "model-a", "weight": 100}]},
         "backends.0"),
        ({"backends": [{"endpoint_id": endpoint_id, "model": "model-a", "weight": 100}]}, "backends.0"),
        ({"backends": [{"provider_id": mine["id"], "model": "model-a", "weight": 50},
                       {"provider_id": mine["id"], "model": "model-a", "weight": 50}]}, "body"),
        ({"backends": [{"endpoint_id": endpoint_id, "weight": 100}],
          "fallbacks": [{"endpoint_id": endpoint_id}]}, "body"),
        ({"backends": [{"endpoint_id": endpoint_id, "weight": 100}],
          "fallbacks": [{"provider_id": theirs["id"], "model": "model-a"}]}, "fallbacks.0.provider_id"),
        ({"backends": [{"endpoint_id": endpoint_id, "weight": 100}],
          "fallbacks": [{"endpoint_id": endpoint_id, "weight": 5}]}, "fallbacks.0.weight"),
        ({"backends": [{"endpoint_id": endpoint_id, "weight": 100}], "spill_queue_depth": -1}, "spill_queue_depth"),
        ({"backends": [{"provider_id": mine["id"], "model": "m " * 200, "weight": 100}]}, "backends.0.model"),
    ]
    for body, field in cases:
        refused = await anon_api.put(f"/api/routes/{route}", json=body, headers=bearer(member))
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"]["details"][0]["field"] == field, (body, refused.text)
    assert (await anon_api.get(f"/api/routes/{route}", headers=bearer(member))).status_code == 404


async def test_a_provider_in_use_is_not_deleted(api, anon_api, db_pool):
    project, member = await new_project(api)
    endpoint_id, _ = await running_endpoint_row(db_pool, project)
    provider = await create_provider(anon_api, member)
    route = unique("chat")
    assert (await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"endpoint_id": endpoint_id, "weight": 100}],
        "fallbacks": [{"provider_id": provider["id"], "model": "model-a"}]})).status_code == 200
    refused = await anon_api.delete(f"/api/providers/{provider['id']}", headers=bearer(member))
    assert refused.status_code == 409 and route in refused.json()["error"]["message"]
    assert (await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"endpoint_id": endpoint_id, "weight": 100}], "fallbacks": []})).status_code == 200
    assert (await anon_api.delete(f"/api/providers/{provider['id']}", headers=bearer(member))).status_code == 204
    assert (await anon_api.get(f"/api/providers/{provider['id']}", headers=bearer(member))).status_code == 404


async def test_a_route_of_providers_alone_outlives_an_unrelated_endpoints_removal(api, anon_api, db_pool):
    from control.store import endpoints as endpoint_store

    project, member = await new_project(api)
    endpoint_id, _ = await running_endpoint_row(db_pool, project)
    provider = await create_provider(anon_api, member)
    route = unique("chat")
    assert (await anon_api.put(f"/api/routes/{route}", headers=bearer(member), json={
        "backends": [{"provider_id": provider["id"], "model": "model-a", "weight": 100}]})).status_code == 200
    async with db_pool.acquire() as conn:
        await endpoint_store.remove_from_routing(conn, endpoint_id)
    assert (await anon_api.get(f"/api/routes/{route}", headers=bearer(member))).status_code == 200
