"""Browsing the registry: filter by architecture, size, license, status and benchmarks;
sort; page with a cursor; another project sees none of it."""

from __future__ import annotations

import pytest

from tests.helpers import unique


@pytest.fixture(scope="module")
async def catalog(api, settings):
    """Register a small catalog in a fresh project (scans fail fast: no objects; status is irrelevant here)."""
    project = (await api.post("/api/projects", json={"name": unique("browse")})).json()
    headers = {"Authorization": f"Bearer {project['token']}"}
    specs = [
        ("llama-3-8b", "llama", 8_000_000_000, "llama3", 66.6),
        ("llama-3-70b", "llama", 70_000_000_000, "llama3", 79.5),
        ("mistral-7b", "mistral", 7_000_000_000, "apache-2.0", 62.5),
        ("qwen2.5-14b", "qwen2", 14_000_000_000, "apache-2.0", 79.9),
        ("tiny-mit", "llama", 1_000_000, "mit", None),
    ]
    ids = {}
    for name, architecture, parameters, license_id, mmlu in specs:
        body = {"name": name, "architecture": architecture, "parameter_count": parameters, "context_length": 8192,
                "source_path": f"s3://{settings.models_bucket}/{project['name']}/{unique('absent')}",
                "license": license_id}
        response = await api.post("/api/models", json=body, headers=headers)
        assert response.status_code == 202, response.text
        ids[name] = response.json()["id"]
        if mmlu is not None:
            added = await api.post(f"/api/models/{ids[name]}/benchmarks", headers=headers,
                                   json={"name": "mmlu", "score": mmlu, "unit": "%", "source": "model card"})
            assert added.status_code == 201, added.text
    return headers, ids


async def names(api, headers, **params) -> list[str]:
    response = await api.get("/api/models", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [m["name"] for m in response.json()["items"]]


async def test_filters(api, catalog):
    headers, _ = catalog
    assert sorted(await names(api, headers, architecture="llama")) == ["llama-3-70b", "llama-3-8b", "tiny-mit"]
    assert sorted(await names(api, headers, min_parameters=7_000_000_000, max_parameters=14_000_000_000)) == [
        "llama-3-8b", "mistral-7b", "qwen2.5-14b"]
    assert sorted(await names(api, headers, license="apache-2.0")) == ["mistral-7b", "qwen2.5-14b"]
    assert sorted(await names(api, headers, license="permissive")) == ["mistral-7b", "qwen2.5-14b", "tiny-mit"]
    assert sorted(await names(api, headers, benchmark="mmlu", min_score=70)) == ["llama-3-70b", "qwen2.5-14b"]
    assert await names(api, headers, status="AVAILABLE") == []


async def test_sort_by_score_and_size(api, catalog):
    headers, _ = catalog
    assert await names(api, headers, benchmark="mmlu", sort="-score") == [
        "qwen2.5-14b", "llama-3-70b", "llama-3-8b", "mistral-7b"]
    assert await names(api, headers, sort="parameters") == [
        "tiny-mit", "mistral-7b", "llama-3-8b", "qwen2.5-14b", "llama-3-70b"]


async def test_cursor_pages_through_everything_once(api, catalog):
    headers, ids = catalog
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "sort": "-parameters", **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/models", params=params, headers=headers)).json()
        seen += [m["name"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["llama-3-70b", "qwen2.5-14b", "llama-3-8b", "mistral-7b", "tiny-mit"]


async def test_detail_carries_benchmarks_and_other_projects_see_nothing(api, catalog):
    headers, ids = catalog
    detail = (await api.get(f"/api/models/{ids['mistral-7b']}", headers=headers)).json()
    assert [(b["name"], b["score"]) for b in detail["benchmarks"]] == [("mmlu", 62.5)]
    # The admin's own project does not see this project's models.
    assert (await api.get(f"/api/models/{ids['mistral-7b']}")).status_code == 404
    assert "mistral-7b" not in await names(api, {})


@pytest.mark.parametrize("params, field", [
    ({"min_score": 50}, "min_score"), ({"sort": "score"}, "sort"), ({"sort": "colour"}, "sort"),
    ({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit"), ({"status": "SLEEPING"}, "status"),
    ({"min_parameters": 10, "max_parameters": 5}, "min_parameters"),
])
async def test_bad_browse_parameters_are_422_naming_the_field(api, params, field):
    response = await api.get("/api/models", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


async def test_bad_benchmark_body_is_422(api, catalog):
    headers, ids = catalog
    response = await api.post(f"/api/models/{ids['tiny-mit']}/benchmarks", headers=headers,
                              json={"name": "MMLU score!", "score": "high"})
    assert response.status_code == 422
    assert {d["field"] for d in response.json()["error"]["details"]} == {"name", "score"}
