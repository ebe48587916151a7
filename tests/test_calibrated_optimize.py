"""Calibration on the real stack: measurements imported through POST /api/measurements calibrate every later
OptimizeDeployment of that model, GPU type and runtime; the search then picks differently and says what it was
calibrated on (the measurements' ids and the coefficients, on the stored result)."""

from __future__ import annotations

import asyncio

import pytest

from budsim.predictor import predict
from budsim.schemas import ServingConfig, Workload
from core.model_facts import ModelArchitecture
from tests.deploy_helpers import available_model, local_cluster_id
from tests.model_files import write_tiny_llama

GPU = "nvidia-h100-80gb"  # the local cluster's GPUs
WORKLOAD = {"input_tokens": 256, "output_tokens": 64, "concurrency": 16}
SLOWER = 3.0  # what the imported measurements say: every token and first token three times the cold prediction


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("calibrated") / "m"))


async def _optimize(api, model, cluster_id, targets) -> dict:
    response = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": cluster_id, "optimization_method": "REGRESSOR",
        "performance_targets": targets, "workload": WORKLOAD})
    assert response.status_code == 202, response.text
    async with asyncio.timeout(300):
        while (body := (await api.get(f"/api/optimizations/{response.json()['id']}")).json())["status"] == "RUNNING":
            await asyncio.sleep(0.5)
    assert body["status"] == "SUCCEEDED", body
    return body["result"]


def _measured_rows(model: dict, config: dict) -> list[dict]:
    """The recommended config benchmarked at three concurrencies, SLOWER x what the cold predictor says."""
    facts = ModelArchitecture.model_validate(model["facts"])
    serving = ServingConfig(tensor_parallel_size=config["tensor_parallel_size"],
                            pipeline_parallel_size=config["pipeline_parallel_size"],
                            max_num_seqs=config["max_num_seqs"],
                            max_num_batched_tokens=config["max_num_batched_tokens"], runtime="vllm")
    rows = []
    for concurrency in (1, 4, 16):
        workload = Workload(input_tokens=WORKLOAD["input_tokens"], output_tokens=WORKLOAD["output_tokens"],
                            concurrency=concurrency)
        cold = predict(facts, GPU, serving, workload)
        rows.append({
            "model_id": model["id"], "model_name": model["name"], "gpu_type": GPU, "runtime": "vllm",
            "tp": serving.tensor_parallel_size, "pp": serving.pipeline_parallel_size,
            "max_num_seqs": serving.max_num_seqs, "max_num_batched_tokens": serving.max_num_batched_tokens,
            "input_tokens": workload.input_tokens, "output_tokens": workload.output_tokens,
            "concurrency": concurrency, "ttft_p50_ms": cold.ttft_ms * SLOWER, "tpot_p50_ms": cold.tpot_ms * SLOWER,
            "source": {"kind": "import", "id": "calibration-test"}})
    return rows


async def test_imported_measurements_calibrate_the_next_optimization(api, control_worker, optimizer_worker, model):
    cluster_id = await local_cluster_id(api)
    # a latency the cold model meets easily on one GPU, but not at three times its speed on any config
    targets = {"max_latency_ms": 20}
    cold = await _optimize(api, model, cluster_id, targets)
    assert cold["meets_targets"] is True and cold["calibration"] is None
    assert "uncalibrated" in cold["message"]
    chosen = cold["recommendation"]
    assert chosen["prediction"]["calibrated"] is False and chosen["config"]["replicas"] == 1

    imported = await api.post("/api/measurements", json=_measured_rows(model, chosen["config"]))
    assert imported.status_code == 201, imported.text
    ids = imported.json()["ids"]

    calibrated = await _optimize(api, model, cluster_id, targets)
    calibration = calibrated["calibration"]
    assert calibration["measurements"] == ids and calibration["n"] == 3 and calibration["consistent"] is True
    assert calibration["group"] == {"model": model["name"], "gpu": GPU, "runtime": "vllm", "precision": "bf16"}
    assert calibration["tpot"]["weights_scale"] > 1.5 and calibration["ttft"]["prefill_scale"] > 1.5
    assert "calibrated on 3 measurement(s)" in calibrated["message"]
    advice = calibrated["recommendation"]
    assert advice["prediction"]["calibrated"] is True
    # the cold choice would now miss: no config meets 20 ms, and the closest is another one
    assert calibrated["meets_targets"] is False
    assert advice["config"] != chosen["config"]
    assert advice["prediction"]["e2e_latency_ms"] > 2 * chosen["prediction"]["e2e_latency_ms"]
    # every prediction carries its interval, narrower than the cold one
    for candidate in [advice, *calibrated["pareto"]]:
        p = candidate["prediction"]
        assert p["ttft_p10_ms"] < p["ttft_ms"] < p["ttft_p90_ms"] and p["tpot_p10_ms"] < p["tpot_ms"] < p["tpot_p90_ms"]
    cold_width = chosen["prediction"]["tpot_p90_ms"] / chosen["prediction"]["tpot_p10_ms"]
    assert advice["prediction"]["tpot_p90_ms"] / advice["prediction"]["tpot_p10_ms"] < cold_width

    # the same measurements give the same calibration
    again = await _optimize(api, model, cluster_id, targets)
    assert again["calibration"] == calibration


async def test_confidence_high_is_validated_and_shown(api, control_worker, optimizer_worker, model):
    cluster_id = await local_cluster_id(api)
    bad = await api.post("/api/optimizations", json={
        "model_id": model["id"], "cluster_id": cluster_id, "performance_targets": {"confidence": "certain"}})
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["details"][0]["field"] == "performance_targets.confidence"
    result = await _optimize(api, model, cluster_id, {"max_ttft_ms": 1000, "confidence": "high"})
    advice = result["recommendation"]
    assert result["meets_targets"] and advice["prediction"]["ttft_p90_ms"] <= 1000
    assert "P90" in advice["reason"]
