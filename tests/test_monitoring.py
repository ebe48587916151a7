"""Monitoring end to end: real Prometheus scrapes the replicas, Reoptimize reads the serving metrics over real load,
raises the alerts a user's target calls for, compares with the prediction, and leaves a calibrated recommendation."""

from __future__ import annotations

import asyncio

import pytest

from tests.model_files import write_tiny_llama
from tests.deploy_helpers import (
    MANUAL_CONFIG,
    available_model,
    create_endpoint,
    inference_key_headers,
    keep_busy,
    local_cluster_id,
    settled,
    wait_endpoint,
    wait_for_route,
)
from workflows.starters import REOPTIMIZE_SCHEDULE_ID


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("monitoring") / "tiny"))


async def test_reoptimize_observes_live_metrics_alerts_and_recommends(
    api, control_worker, optimizer_worker, gateway, prometheus, model, temporal_client, settings
):
    schedule = await temporal_client.get_schedule_handle(REOPTIMIZE_SCHEDULE_ID).describe()
    assert schedule.schedule.spec.intervals[0].every.total_seconds() == settings.reoptimize_interval_s

    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
        "runtime": "vllm", "optimization_method": "MANUAL", "config": MANUAL_CONFIG, "replicas": 1,
        "performance_targets": {"min_throughput_tps": 1_000_000}})  # a target no tiny replica meets: an alert
    assert response.status_code == 202, response.text
    await wait_endpoint(api, endpoint["id"], lambda e: e["optimization_status"] != "RUNNING")
    assert (await api.post(f"/api/endpoints/{endpoint['id']}/deploy")).status_code == 202
    assert (await wait_endpoint(api, endpoint["id"], settled))["status"] == "RUNNING"
    assert (await api.get(f"/api/endpoints/{endpoint['id']}/metrics")).json()["monitoring"] is None

    key = inference_key_headers(settings.state_dir)
    await wait_for_route(gateway, endpoint["name"], key)
    stop = asyncio.Event()
    load = [asyncio.create_task(keep_busy(gateway, endpoint["name"], stop, max_tokens=16, headers=key))
            for _ in range(4)]
    try:
        await asyncio.sleep(8)  # several 1 s scrapes of the replica under load
        refresh = await api.post(f"/api/endpoints/{endpoint['id']}/metrics/refresh", params={"window_s": 30})
        assert refresh.status_code == 202, refresh.text
        async with asyncio.timeout(120):
            while (monitoring := (await api.get(f"/api/endpoints/{endpoint['id']}/metrics")).json()["monitoring"]) is None:
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*load)

    assert monitoring.get("error") is None, monitoring
    metrics = monitoring["metrics"]
    assert metrics["requests_per_s"] > 0 and metrics["throughput_tps"] > 0
    assert 0 < metrics["ttft_p50_ms"] <= metrics["ttft_p99_ms"]
    assert metrics["output_tokens_per_request"] > 1
    # Measured / predicted, both ways; a tiny model's sub-millisecond predicted TPOT sits far below vLLM's finest
    # histogram bucket (10 ms), so here the ratio is large and becomes the (bounded) calibration of the new search.
    assert monitoring["drift"]["tpot"] > 0 and monitoring["drift"]["ttft"] > 0
    assert monitoring["expectation"]["predicted_tpot_ms"] > 0
    assert any(alert.startswith("throughput") for alert in monitoring["alerts"])
    assert "alert: throughput" in " ".join(monitoring["reoptimize_because"])
    advice = monitoring["recommendation"]
    assert advice["status"] == "SUCCEEDED", advice
    assert advice["workload"]["output_tokens"] > 1
    assert advice["calibration"]["tpot_scale"] == pytest.approx(min(monitoring["drift"]["tpot"], 50))
    assert advice["meets_targets"] is False and advice["config"]["tensor_parallel_size"] >= 1
    stored = await api.get(f"/api/optimizations/{advice['optimization_id']}")
    assert stored.status_code == 200 and stored.json()["status"] == "SUCCEEDED"
    # Advice only: the endpoint keeps running the config it was deployed with.
    assert (await api.get(f"/api/endpoints/{endpoint['id']}")).json()["deployment"]["config"]["max_num_seqs"] == \
        MANUAL_CONFIG["max_num_seqs"]

    bad_window = await api.post(f"/api/endpoints/{endpoint['id']}/metrics/refresh", params={"window_s": 1})
    assert bad_window.status_code == 422
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)
