"""Monitoring end to end: real Prometheus scrapes the replicas, Reoptimize reads the serving metrics over real load,
raises the alerts a user's target calls for, compares the means with the predicted interval (0.1 ms tokens are no
drift), keeps the window as a measurement, and leaves a calibrated recommendation; a window with too few requests
gives none."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from control.monitoring import MIN_WINDOW_REQUESTS

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

    # A few requests only: the alert fires, but the window is no measurement and gives no advice.
    async with httpx.AsyncClient(timeout=30, headers=key) as client:
        for _ in range(3):
            reply = await client.post(f"{gateway}/chat/completions", json={
                "model": endpoint["name"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
            assert reply.status_code == 200, reply.text
    await asyncio.sleep(3)  # scraped
    quiet = await _refreshed(api, endpoint["id"], None)
    assert quiet.get("error") is None, quiet
    assert quiet["metrics"]["requests"] < MIN_WINDOW_REQUESTS
    assert quiet["no_advice"].endswith(f"need at least {MIN_WINDOW_REQUESTS}")
    assert quiet.get("recommendation") is None and quiet["measurement_id"] is None
    assert any(alert.startswith("throughput") for alert in quiet["alerts"])

    stop = asyncio.Event()
    load = [asyncio.create_task(keep_busy(gateway, endpoint["name"], stop, max_tokens=16, headers=key))
            for _ in range(4)]
    try:
        await asyncio.sleep(8)  # several 1 s scrapes of the replica under load
        monitoring = await _refreshed(api, endpoint["id"], quiet["at"])
    finally:
        stop.set()
        await asyncio.gather(*load)

    assert monitoring.get("error") is None, monitoring
    metrics = monitoring["metrics"]
    assert metrics["requests_per_s"] > 0 and metrics["throughput_tps"] > 0
    assert metrics["requests"] >= MIN_WINDOW_REQUESTS and monitoring["no_advice"] is None
    assert 0 < metrics["ttft_p50_ms"] <= metrics["ttft_p99_ms"]
    assert metrics["output_tokens_per_request"] > 1
    # The tiny model's tokens take a fraction of a millisecond: vLLM's finest TPOT bucket is 10 ms, so the bucket
    # median says 5 ms, while the histogram's sum / count gives the real mean. Drift is that mean against the
    # predicted interval for the deployed config under the load the window saw: reported exactly when outside.
    expectation = monitoring["expectation"]
    assert metrics["tpot_mean_ms"] < 1 < metrics["tpot_p50_ms"]
    assert "under the measured load" in expectation["basis"]
    assert monitoring["drift"]["tpot"] == pytest.approx(metrics["tpot_mean_ms"] / expectation["predicted_tpot_ms"])
    inside = expectation["tpot_p10_ms"] <= metrics["tpot_mean_ms"] <= expectation["tpot_p90_ms"]
    assert any(reason.startswith("tpot") for reason in monitoring["reoptimize_because"]) is not inside
    assert "alert: throughput" in " ".join(monitoring["reoptimize_because"])

    # The window became a production measurement, and the advice rests on it.
    stored = (await api.get("/api/measurements", params={"model_id": model["id"]})).json()["items"]
    window = next(m for m in stored if m["id"] == monitoring["measurement_id"])
    assert window["source"]["kind"] == "production" and window["request_count"] >= MIN_WINDOW_REQUESTS
    assert window["tpot_p50_ms"] == pytest.approx(metrics["tpot_mean_ms"])
    advice = monitoring["recommendation"]
    assert advice["status"] == "SUCCEEDED", advice
    assert advice["workload"]["output_tokens"] > 1
    based_on = advice["based_on"]
    assert based_on["requests"] >= MIN_WINDOW_REQUESTS and based_on["window_s"] == 30
    assert monitoring["measurement_id"] in based_on["calibration"]["measurements"]
    assert "calibrated on" in advice["message"] and advice["prediction"]["calibrated"] is True
    assert advice["meets_targets"] is False and advice["config"]["tensor_parallel_size"] >= 1
    stored = await api.get(f"/api/optimizations/{advice['optimization_id']}")
    assert stored.status_code == 200 and stored.json()["status"] == "SUCCEEDED"
    assert stored.json()["result"]["calibration"]["n"] == based_on["calibration"]["n"]
    # Advice only: the endpoint keeps running the config it was deployed with.
    assert (await api.get(f"/api/endpoints/{endpoint['id']}")).json()["deployment"]["config"]["max_num_seqs"] == \
        MANUAL_CONFIG["max_num_seqs"]

    bad_window = await api.post(f"/api/endpoints/{endpoint['id']}/metrics/refresh", params={"window_s": 1})
    assert bad_window.status_code == 422
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await wait_endpoint(api, endpoint["id"], lambda e: False)


async def _refreshed(api, endpoint_id: str, previous_at: str | None) -> dict:
    """A Reoptimize pass over the last 30 s, once its snapshot (a new one, not `previous_at`'s) is stored."""
    refresh = await api.post(f"/api/endpoints/{endpoint_id}/metrics/refresh", params={"window_s": 30})
    assert refresh.status_code == 202, refresh.text
    async with asyncio.timeout(180):
        while True:
            monitoring = (await api.get(f"/api/endpoints/{endpoint_id}/metrics")).json()["monitoring"]
            if monitoring is not None and monitoring.get("at") != previous_at:
                return monitoring
            await asyncio.sleep(0.5)
