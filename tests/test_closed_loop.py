"""The performance loop on the local stack, with simulated GPUs that do not run at the predicted speed.

A local cluster registered with a `simulation` runs its replicas at the optimizer's uncalibrated prediction times
hidden scales. Deploy a config, benchmark it, let the optimizer recommend one (calibrated on the benchmark's
measurements), deploy that as a rolling update, benchmark again: the second benchmark's prediction is measurably
closer to what it measures than the first one's was."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from tests.deploy_helpers import available_model, configure_manual, create_endpoint, settled, wait_endpoint
from tests.helpers import unique
from tests.model_files import write_tiny_llama

GPU = "nvidia-h100-80gb"
# The simulated silicon, unknown to the optimizer: first tokens 12x and every later token 25x its cold prediction
# (the tiny model's predicted times are fractions of a millisecond; so scaled, a client can time them).
SIMULATION = {"ttft_scale": 12.0, "tpot_scale": 25.0, "batch_scale": 1.0}
WORKLOAD = {"input_tokens": 32, "output_tokens": 16, "concurrency": 4}
TARGETS = {"max_ttft_ms": 5000}
SWEEP = {"input_tokens": 32, "output_tokens": 16, "concurrency": [1, 4], "requests_per_level": 12}


@pytest.fixture(scope="module")
async def silicon_cluster(api, control_worker) -> str:
    response = await api.post("/api/clusters", json={
        "name": unique("silicon"), "kind": "local", "gpus": [{"gpu_type": GPU, "count": 8}],
        "simulation": SIMULATION})
    assert response.status_code == 202, response.text
    cluster_id = response.json()["id"]
    async with asyncio.timeout(120):
        while (cluster := (await api.get(f"/api/clusters/{cluster_id}")).json())["status"] == "REGISTERING":
            await asyncio.sleep(0.3)
    assert cluster["status"] == "READY", cluster
    assert cluster["simulation"] == SIMULATION
    return cluster_id


async def recommend(api, endpoint_id: str) -> dict:
    response = await api.put(f"/api/endpoints/{endpoint_id}/config", json={
        "runtime": "vllm", "optimization_method": "REGRESSOR", "performance_targets": TARGETS, "workload": WORKLOAD})
    assert response.status_code == 202, response.text
    endpoint = await wait_endpoint(api, endpoint_id, lambda e: e["optimization_status"] != "RUNNING", timeout=300)
    assert endpoint["optimization_status"] == "SUCCEEDED", endpoint
    return endpoint


async def deploy(api, endpoint_id: str) -> dict:
    response = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
    assert response.status_code == 202, response.text
    endpoint = await wait_endpoint(api, endpoint_id, lambda e: settled(e) and e["pending_config"] is None, timeout=300)
    assert endpoint["status"] == "RUNNING", endpoint["error"]
    return endpoint


async def benchmark(api, endpoint_id: str) -> dict:
    started = await api.post(f"/api/endpoints/{endpoint_id}/benchmark", json=SWEEP)
    assert started.status_code == 202, started.text
    async with asyncio.timeout(300):
        while (run := (await api.get(f"/api/endpoints/{endpoint_id}/benchmarks/{started.json()['id']}")).json()
               )["status"] not in ("COMPLETED", "FAILED"):
            await asyncio.sleep(0.3)
    assert run["status"] == "COMPLETED", run
    return run


def prediction_errors(run: dict) -> dict[str, float]:
    """Mean |predicted - measured| / measured over the levels, for TTFT and TPOT (medians, the client's timing)."""
    errors: dict[str, list[float]] = {"ttft": [], "tpot": []}
    for level in run["levels"]:
        for metric in errors:
            measured, predicted = level[f"{metric}_p50_ms"], level["predicted"][f"{metric}_ms"]
            errors[metric].append(abs(predicted - measured) / measured)
    return {metric: statistics.fmean(values) for metric, values in errors.items()}


@pytest.mark.timeout(900)  # two deploys, two sweeps and two searches on a loaded machine
async def test_benchmark_calibrate_recommend_deploy_benchmark_comes_closer(
        api, control_worker, optimizer_worker, gateway, settings, silicon_cluster, tmp_path):
    model = await available_model(api, settings, write_tiny_llama(tmp_path / "m"))
    endpoint = await create_endpoint(api, model["id"], silicon_cluster)
    try:
        await configure_manual(api, endpoint["id"])  # what a user first tries: the test's manual config
        await deploy(api, endpoint["id"])
        first = await benchmark(api, endpoint["id"])
        assert all(level["predicted"]["calibrated_on"] == 0 for level in first["levels"]), first["levels"]
        cold_errors = prediction_errors(first)
        # the silicon is far slower than the cold model thinks
        assert cold_errors["tpot"] > 0.5 and cold_errors["ttft"] > 0.5, cold_errors

        advised = await recommend(api, endpoint["id"])  # the sweep's levels are measurements now
        levels = len(SWEEP["concurrency"])
        result = advised["recommendation"]
        assert f"calibrated on {levels} measurement(s)" in result["message"], result
        assert result["recommendation"]["prediction"]["calibrated"] is True
        assert advised["pending_config"] is not None  # another config than the manual one runs: deploy it
        await deploy(api, endpoint["id"])
        second = await benchmark(api, endpoint["id"])
        assert all(level["predicted"]["calibrated_on"] == levels for level in second["levels"]), second["levels"]
        calibrated_errors = prediction_errors(second)
        print(f"prediction error before calibration {cold_errors}, after {calibrated_errors}")
        assert calibrated_errors["tpot"] < cold_errors["tpot"] / 2, (cold_errors, calibrated_errors)
        assert calibrated_errors["ttft"] < cold_errors["ttft"] / 2, (cold_errors, calibrated_errors)
    finally:
        await api.delete(f"/api/endpoints/{endpoint['id']}")
        await wait_endpoint(api, endpoint["id"], lambda e: e["status"] in ("DELETED", "GONE"), timeout=120)


async def test_a_simulation_is_refused_for_a_kubernetes_cluster_and_bounded(api):
    kubeconfig = "apiVersion: v1\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443'}\n"
    refused = await api.post("/api/clusters", json={
        "name": unique("k"), "kind": "kubernetes", "gpus": [{"gpu_type": GPU, "count": 1}], "kubeconfig": kubeconfig,
        "simulation": SIMULATION})
    assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "simulation", refused.text
    absurd = await api.post("/api/clusters", json={
        "name": unique("s"), "kind": "local", "gpus": [{"gpu_type": GPU, "count": 1}],
        "simulation": {"tpot_scale": 1e9}})
    assert absurd.status_code == 422 and "simulation.tpot_scale" in absurd.text, absurd.text


def test_the_simulated_gpu_runs_like_the_measured_silicon_where_a_profile_covers_it_else_distorted():
    from budsim.catalog import get_model
    from budsim.predictor import predict
    from budsim.schemas import ServingConfig
    from control.payloads.clusters import SimulatedSilicon
    from control.planning import PROBE_WORKLOAD, simulated_timing
    from core.model_facts import architecture_from_config
    from tests.model_files import TinyLlamaSpec

    measured = get_model("MiniMaxAI/MiniMax-M2.5").model_copy(update={"dtype": "fp8"})
    config = ServingConfig(tensor_parallel_size=4, max_num_seqs=64, runtime="vllm")
    profiled = simulated_timing(measured, "nvidia-h200", config, 0, SimulatedSilicon(tpot_scale=9))
    assert profiled.source.startswith("measured silicon profile: MiniMaxAI/MiniMax-M2.5 on nvidia-h200, vllm, fp8")
    cold = predict(measured, "nvidia-h200", config, PROBE_WORKLOAD)
    assert profiled.tpot_ms != cold.tpot_ms and profiled.tpot_ms != cold.tpot_ms * 9  # neither the model nor its scale

    spec = TinyLlamaSpec()
    tiny = architecture_from_config(spec.config(), spec.parameter_count)  # no profile covers it
    small = ServingConfig(tensor_parallel_size=1, max_num_seqs=8, runtime="vllm")
    plain = simulated_timing(tiny, GPU, small, 0)
    distorted = simulated_timing(tiny, GPU, small, 0, SimulatedSilicon(**SIMULATION))
    assert plain.source == "the uncalibrated prediction"
    assert distorted.ttft_ms == pytest.approx(plain.ttft_ms * 12) and distorted.tpot_ms == pytest.approx(plain.tpot_ms * 25)
    assert distorted.batch_tpot_factor == plain.batch_tpot_factor  # batch_scale 1
    assert "TPOT x25" in distorted.source
