"""Every free-form field a request can store is bounded: an over-long, over-full or over-deep value is a 422 naming
the field, before anything reaches the database or a workflow; a body over the API's size limit is a 413."""

from __future__ import annotations

import uuid

import pytest

from control.payloads.common import MAX_JSON_FIELD_BYTES, MAX_JSON_FIELD_DEPTH, MAX_JSON_FIELD_ITEMS

SOME_ID = str(uuid.uuid4())  # bodies are validated before any lookup, so no row is needed


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"level": value}
    return value


def model_body(**overrides) -> dict:
    return {"name": "bounded", "architecture": "llama", "parameter_count": 1, "context_length": 2048,
            "source_path": "s3://models/bounded", **overrides}


def cluster_body(**overrides) -> dict:
    return {"name": "bounded", "kind": "local", "gpus": [{"gpu_type": "nvidia-h100-80gb", "count": 8}], **overrides}


def queue_metric(selector: dict) -> dict:
    return {"type": "External", "external": {"metric": {"name": "inference_queue_depth", "selector": selector},
                                             "target": {"type": "Value", "value": 100}}}


CASES = [
    # (method, path, body, the field the 422 names)
    ("POST", "/api/models", model_body(name="m" * 129), "name"),
    ("POST", "/api/models", model_body(name="my model"), "name"),
    ("POST", "/api/models", model_body(architecture="a" * 65), "architecture"),
    ("POST", "/api/models", model_body(architecture="llama; drop table"), "architecture"),
    ("POST", "/api/models", model_body(source_path="s3://models/" + "p" * 520), "source_path"),
    ("POST", "/api/models", model_body(license="l" * 201), "license"),
    ("POST", "/api/models", model_body(version="v" * 65), "version"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks", {"name": "b" * 65, "score": 1}, "name"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks", {"name": "mmlu", "score": 1, "unit": "u" * 33}, "unit"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks", {"name": "mmlu", "score": 1, "gpu_type": "g" * 65}, "gpu_type"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks", {"name": "mmlu", "score": 1, "source": "s" * 201}, "source"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks",
     {"name": "mmlu", "score": 1, "details": {f"k{i}": i for i in range(MAX_JSON_FIELD_ITEMS + 1)}}, "details"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks",
     {"name": "mmlu", "score": 1, "details": nested(MAX_JSON_FIELD_DEPTH + 1)}, "details"),
    ("POST", f"/api/models/{SOME_ID}/benchmarks",
     {"name": "mmlu", "score": 1, "details": {"log": "x" * MAX_JSON_FIELD_BYTES}}, "details"),
    ("POST", "/api/clusters", cluster_body(name="c" * 64), "name"),
    ("POST", "/api/clusters", cluster_body(gpus=[{"gpu_type": "g" * 65, "count": 1}]), "gpus.0.gpu_type"),
    ("POST", "/api/clusters", cluster_body(gpus=[{"gpu_type": f"t{i}", "count": 1} for i in range(33)]), "gpus"),
    ("POST", "/api/clusters", cluster_body(kind="kubernetes", kubeconfig="clusters:\n" + "#" * 300_000),
     "kubeconfig"),
    ("POST", "/api/endpoints", {"name": "e" * 54, "project_id": SOME_ID, "model_id": SOME_ID,
                                "cluster_id": SOME_ID}, "name"),
    ("PUT", f"/api/endpoints/{SOME_ID}/config", {"resources": {"gpu_type": "g" * 65, "gpu_count": 1}},
     "resources.gpu_type"),
    ("POST", "/api/optimizations", {"model_id": SOME_ID, "cluster_id": SOME_ID, "gpu_type": "g" * 65}, "gpu_type"),
    ("PUT", f"/api/endpoints/{SOME_ID}/autoscaling", {"metrics": [queue_metric(nested(MAX_JSON_FIELD_DEPTH + 1))]},
     "metrics.0.external.metric.selector"),
    ("PUT", f"/api/endpoints/{SOME_ID}/autoscaling",
     {"metrics": [queue_metric({"k": "x" * MAX_JSON_FIELD_BYTES})]}, "metrics.0.external.metric.selector"),
    ("PUT", "/api/routes/bounded", {"backends": [{"endpoint_id": str(uuid.uuid4()), "weight": 0}] * 17}, "backends"),
    ("POST", "/api/routes/bounded/shift", {"to_endpoint_id": SOME_ID, "steps": list(range(1, 22)) + [100]}, "steps"),
]


@pytest.mark.parametrize("method, path, body, field", CASES,
                         ids=[f"{method} {path.replace(SOME_ID, '{id}')} {field}" for method, path, _, field in CASES])
async def test_an_over_long_value_is_422_naming_the_field(api, method: str, path: str, body: dict, field: str):
    response = await api.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert field in [detail["field"] for detail in response.json()["error"]["details"]], response.text


async def test_a_benchmark_body_over_the_api_limit_is_refused_before_any_router(api, settings):
    huge = {"name": "mmlu", "score": 1, "details": {"log": "x" * (settings.api_max_body_bytes + 1)}}
    response = await api.post(f"/api/models/{SOME_ID}/benchmarks", json=huge)
    assert response.status_code == 413, response.text


async def test_values_at_the_bounds_are_accepted(api):
    """The bounds refuse nothing real: details filled to the limits pass validation (the 404 is the lookup)."""
    details = {**{f"k{i}": i for i in range(MAX_JSON_FIELD_ITEMS - 1)}, "deep": nested(MAX_JSON_FIELD_DEPTH - 1)}
    response = await api.post(f"/api/models/{SOME_ID}/benchmarks",
                              json={"name": "m" * 64, "score": 1, "unit": "u" * 32, "source": "s" * 200,
                                    "details": details})
    assert response.status_code == 404, response.text


async def test_an_abort_reason_is_bounded(api):
    response = await api.post("/api/routes/anything/shift/abort", json={"reason": "r" * 501})
    assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "reason"
