"""POST /api/optimizations: the optimizer as a workflow on the bud-optimizer queue; bad input is a 422 with the
reason, infeasible targets a normal answer."""

from __future__ import annotations

import asyncio

import pytest

from tests.model_files import write_tiny_llama
from tests.deploy_helpers import available_model, local_cluster_id


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("opt") / "m"))


async def finished(api, optimization_id: str) -> dict:
    async with asyncio.timeout(120):
        while (body := (await api.get(f"/api/optimizations/{optimization_id}")).json())["status"] == "RUNNING":
            await asyncio.sleep(0.2)
    return body


async def test_regressor_returns_pareto_and_recommendation(api, control_worker, optimizer_worker, model):
    response = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": await local_cluster_id(api), "optimization_method": "REGRESSOR",
        "performance_targets": {"max_ttft_ms": 1000}, "workload": {"input_tokens": 256, "output_tokens": 64}})
    assert response.status_code == 202, response.text
    result = (await finished(api, response.json()["id"]))["result"]
    assert result["meets_targets"] is True
    assert result["recommendation"]["prediction"]["ttft_ms"] <= 1000
    assert len(result["pareto"]) >= 1 and result["evaluated"] > 10


async def test_infeasible_targets_are_an_answer_not_an_error(api, control_worker, optimizer_worker, model):
    response = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": await local_cluster_id(api), "optimization_method": "HEURISTIC",
        "performance_targets": {"max_ttft_ms": 0.001, "min_throughput_tps": 1e12}})
    assert response.status_code == 202, response.text
    done = await finished(api, response.json()["id"])
    assert done["status"] == "SUCCEEDED"
    assert done["result"]["meets_targets"] is False
    missed = {miss["target"] for miss in done["result"]["recommendation"]["failed_targets"]}
    assert {"max_ttft_ms", "min_throughput_tps"} <= missed


@pytest.mark.parametrize("body, field", [
    ({"gpu_type": "nvidia-rtx-9999"}, "gpu_type"),
    ({"performance_targets": {"max_ttft_ms": -5}}, "performance_targets.max_ttft_ms"),
    ({"optimization_method": "MANUAL"}, "config"),
    ({"optimization_method": "MANUAL", "config": {"tensor_parallel_size": 3}}, "config"),
    ({"runtime": "llama.cpp"}, "runtime"),
])
async def test_bad_optimization_requests_are_422(api, control_worker, model, body, field):
    response = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": await local_cluster_id(api), **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


async def test_unknown_ids_are_404(api, model):
    import uuid

    response = await api.post("/api/optimizations", json={"model_id": str(uuid.uuid4()),
                                                          "cluster_id": await local_cluster_id(api)})
    assert response.status_code == 404
    assert (await api.get(f"/api/optimizations/{uuid.uuid4()}")).status_code == 404
