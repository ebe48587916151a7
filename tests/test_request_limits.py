"""Every request is bounded before a router sees it: 413 for big bodies, 431 for big headers, 422 for NUL characters
(which PostgreSQL cannot store), each as the API's JSON error, never a 500 and never stored."""

from __future__ import annotations

import pytest


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]


async def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(api, settings):
    big = b'{"name": "' + b"x" * (settings.api_max_body_bytes + 10) + b'"}'
    error = error_of(await api.post("/api/models", content=big, headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"

    async def chunks():  # no Content-Length: counted as it streams
        for _ in range(settings.api_max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    error_of(await api.post("/api/models", content=chunks(), headers={"content-type": "application/json"}), 413)


async def test_headers_over_the_limit_get_431(api, settings):
    error = error_of(await api.get("/api/models", headers={"x-padding": "p" * settings.api_max_header_bytes}), 431)
    assert error["code"] == "headers_too_large"


@pytest.mark.parametrize("body, field", [
    ({"name": "evil\u0000name", "source_path": "s3://models/x/"}, "name"),
    ({"name": "ok", "source_path": "s3://models/x/", "license": "mit\u0000"}, "license"),
    ({"name": "ok", "tags": {"k\u0000": "v"}}, "tags.k\\0"),
    ({"name": "ok", "deep": [{"x": ["fine", "bad\u0000"]}]}, "deep.0.x.1"),
])
async def test_a_nul_in_a_json_string_is_a_422_naming_the_field(api, body, field):
    error = error_of(await api.post("/api/models", json=body), 422)
    assert error["details"] == [{"field": field, "message": "contains a NUL character"}]
    assert field in error["message"]


async def test_a_nul_in_the_query_or_the_path_is_a_422(api):
    error = error_of(await api.get("/api/models", params={"architecture": "llama\x00"}), 422)
    assert error["details"][0]["field"] == "architecture"
    error_of(await api.get("/api/models/abc%00def"), 422)


async def test_ordinary_requests_pass_untouched(api):
    assert (await api.get("/api/models", params={"architecture": "LlamaForCausalLM"})).status_code == 200
    invalid = await api.post("/api/models", json={"name": "x"})  # reaches the router's own validation
    assert error_of(invalid, 422)["code"] == "validation_error"


async def test_numbers_past_what_the_database_holds_are_a_422(api):
    """Found by the schema fuzz: a bound beyond bigint overflowed in PostgreSQL and answered 500."""
    for params in ({"max_parameters": str(2**70)}, {"min_parameters": str(2**63)}):
        error = error_of(await api.get("/api/models", params=params), 422)
        assert error["details"][0]["field"] == next(iter(params))
    assert (await api.get("/api/models", params={"max_parameters": str(2**63 - 1)})).status_code == 200
