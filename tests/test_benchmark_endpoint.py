"""BenchmarkEndpoint on the real stack: a load sweep through the gateway against a deployed endpoint on the local
simulated runtime, its per-level results beside the prediction, the measurements it leaves, the short-lived keys
it revokes, tenancy, the 409/422 refusals, and a worker killed mid-sweep that another resumes at its level."""

from __future__ import annotations

import asyncio
import os
from uuid import UUID

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState

from control.payloads.benchmarks import BenchmarkInput, BenchmarkRequest
from control.planning import simulated_timing
from control.store import benchmarks as benchmark_runs
from control.store import endpoints as endpoint_store
from control.store import models as model_store
from control.translate import serving_config
from control.payloads.deployments import Resources, RuntimeConfig
from core.model_facts import ModelArchitecture
from tests.deploy_helpers import available_model, create_endpoint, local_cluster_id, running_endpoint
from tests.helpers import unique
from tests.inference_helpers import new_project
from tests.model_files import write_tiny_llama
from tests.test_replay import HISTORIES
from workflows.ids import benchmark_endpoint_workflow_id
from workflows.starters import start_benchmark_endpoint

SWEEP = {"input_tokens": 32, "output_tokens": 8, "concurrency": [1, 4], "requests_per_level": 8}
# The tiny model's predicted timing is a fraction of a millisecond per token; slowed down, every token is a few
# milliseconds apart, so the client-side timing is compared with something it can resolve.
SLOWDOWN = 50


async def slow_running_endpoint(api, model_id: str, cluster_id: str) -> dict:
    """A RUNNING endpoint whose replica takes SLOWDOWN times the predicted prefill and per-token time."""
    os.environ["BUD_SIM_SLOWDOWN"] = str(SLOWDOWN)
    try:
        return await running_endpoint(api, model_id, cluster_id)
    finally:
        del os.environ["BUD_SIM_SLOWDOWN"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("bench-model") / "m")


async def wait_run(api, endpoint_id: str, run_id: str, timeout: float = 120, headers=None) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            run = (await api.get(f"/api/endpoints/{endpoint_id}/benchmarks/{run_id}", headers=headers)).json()
            if run["status"] in ("COMPLETED", "FAILED"):
                return run
            await asyncio.sleep(0.3)


async def runtime_timing(db_pool, endpoint_id: str):
    """What the simulated runtime sleeps per request (the deploy's prediction for the probe workload)."""
    async with db_pool.acquire() as conn:
        endpoint = await endpoint_store.get_endpoint(conn, UUID(endpoint_id))
        model = await model_store.get_model(conn, endpoint.model_id)
    serving = serving_config(RuntimeConfig.model_validate(endpoint.config), endpoint.replicas, endpoint.runtime,
                             model.context_length)
    return simulated_timing(ModelArchitecture.model_validate(model.facts),
                            Resources.model_validate(endpoint.resources).gpu_type, serving, 0)


async def test_a_sweep_through_the_gateway_measures_each_level_beside_its_prediction(
        api, anon_api, control_worker, optimizer_worker, gateway, settings, db_pool, tiny):
    model = await available_model(api, settings, tiny)
    endpoint = await slow_running_endpoint(api, model["id"], await local_cluster_id(api))
    started = await api.post(f"/api/endpoints/{endpoint['id']}/benchmark", json=SWEEP)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    assert started.json()["status"] == "PENDING"
    again = await api.post(f"/api/endpoints/{endpoint['id']}/benchmark", json=SWEEP)
    assert again.status_code == 409, again.text  # one sweep of an endpoint at a time

    run = await wait_run(api, endpoint["id"], run_id)
    assert run["status"] == "COMPLETED", run
    timing = await runtime_timing(db_pool, endpoint["id"])
    assert [level["concurrency"] for level in run["levels"]] == [1, 4]
    for level in run["levels"]:
        assert level["completed"] == 8 and level["errors"] == 0 and not level["timed_out"], level
        # measured on the client: never faster than the runtime's own prefill and per-token sleeps
        assert level["ttft_p50_ms"] >= 0.9 * SLOWDOWN * timing.ttft_ms, (level, timing)
        assert level["tpot_p50_ms"] >= 0.9 * SLOWDOWN * timing.tpot_ms, (level, timing)
        assert level["ttft_p99_ms"] >= level["ttft_p50_ms"] and level["tpot_p99_ms"] >= level["tpot_p50_ms"]
        assert level["throughput_tps"] > 0
        assert level["predicted"]["ttft_ms"] > 0 and level["predicted"]["tpot_ms"] > 0
    one, four = run["levels"]
    assert one["tpot_p50_ms"] <= 10 * SLOWDOWN * timing.tpot_ms, (one, timing)  # the gaps are the tokens' own

    listed = await api.get(f"/api/endpoints/{endpoint['id']}/benchmarks")
    assert run_id in [r["id"] for r in listed.json()]
    measured = (await api.get("/api/measurements", params={"source_id": run_id})).json()["items"]
    assert sorted(m["concurrency"] for m in measured) == [1, 4]
    for m in measured:
        assert m["model_id"] == model["id"] and m["source"] == {"kind": "benchmark", "id": run_id,
                                                                  "window_start": None, "window_end": None}
        assert (m["tp"], m["pp"], m["max_num_seqs"], m["input_tokens"], m["output_tokens"]) == (1, 1, 8, 32, 8)
        assert m["request_count"] == 8 and m["gpu_type"] == endpoint["deployment"]["resources"]["gpu_type"]
    by_level = {m["concurrency"]: m for m in measured}
    assert by_level[4]["ttft_p50_ms"] == four["ttft_p50_ms"] and four["measurement_id"] == by_level[4]["id"]

    project = endpoint["project_id"]
    keys = [k for k in (await api.get(f"/api/projects/{project}/api-keys")).json()
            if k["name"].startswith(f"benchmark-{run_id}/")]
    assert len(keys) == 2 and all(k["revoked_at"] for k in keys) and all(k["routes"] == [endpoint["name"]]
                                                                          for k in keys)

    # another project sees neither the run nor its measurements, and cannot start one
    _, token = await new_project(api)
    theirs = {"Authorization": f"Bearer {token}"}
    assert (await anon_api.get(f"/api/endpoints/{endpoint['id']}/benchmarks/{run_id}", headers=theirs)
            ).status_code == 404
    assert (await anon_api.get(f"/api/endpoints/{endpoint['id']}/benchmarks", headers=theirs)).status_code == 404
    assert (await anon_api.post(f"/api/endpoints/{endpoint['id']}/benchmark", json=SWEEP, headers=theirs)
            ).status_code == 404
    assert (await anon_api.get("/api/measurements", params={"source_id": run_id}, headers=theirs)
            ).json()["items"] == []
    assert (await api.get(f"/api/endpoints/{endpoint['id']}/benchmarks/{UUID(int=7)}")).status_code == 404
    await api.delete(f"/api/endpoints/{endpoint['id']}")


async def test_a_sweep_the_endpoint_cannot_serve_is_refused_naming_the_field(
        api, control_worker, optimizer_worker, gateway, settings, tiny):
    model = await available_model(api, settings, tiny)
    cluster = await local_cluster_id(api)
    idle = await create_endpoint(api, model["id"], cluster)
    refused = await api.post(f"/api/endpoints/{idle['id']}/benchmark", json=SWEEP)
    assert refused.status_code == 409 and "RUNNING" in refused.text, refused.text

    endpoint = await running_endpoint(api, model["id"], cluster)  # max_num_seqs 8, 1 replica, 2048-token context
    for change, field in (({"concurrency": [1, 9]}, "concurrency"),
                          ({"concurrency": list(range(1, 18))}, "concurrency"),
                          ({"concurrency": [0]}, "concurrency.0"),
                          ({"concurrency": [2, 2]}, "concurrency"),
                          ({"input_tokens": 2048}, "input_tokens"),
                          ({"input_tokens": 2000, "output_tokens": 100}, "output_tokens"),
                          ({"output_tokens": 10**6}, "output_tokens"),
                          ({"max_duration_s": 3601}, "max_duration_s"),
                          ({"requests_per_level": 10**6}, "requests_per_level")):
        answer = await api.post(f"/api/endpoints/{endpoint['id']}/benchmark", json={**SWEEP, **change})
        assert answer.status_code == 422, (change, answer.text)
        assert answer.json()["error"]["details"][0]["field"] == field, (change, answer.text)
    assert (await api.get(f"/api/endpoints/{endpoint['id']}/benchmarks")).json() == []
    await api.delete(f"/api/endpoints/{endpoint['id']}")
    await api.delete(f"/api/endpoints/{idle['id']}")


async def pending_level(handle, db_pool, run_id: UUID, timeout: float = 120) -> int:
    """Once the first level is recorded and the second has heartbeated some finished requests: how many."""
    async with asyncio.timeout(timeout):
        while True:
            async with db_pool.acquire() as conn:
                if not (await benchmark_runs.get_run(conn, run_id)).levels:
                    await asyncio.sleep(0.1)
                    continue
            description = await handle.describe()
            for pending in description.raw_description.pending_activities:
                if (pending.activity_type.name == "run_benchmark_level"
                        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                        and pending.heartbeat_details.payloads):
                    details = (await handle._client.data_converter.decode(pending.heartbeat_details.payloads))[0]
                    done = len(details.get("samples", []))
                    if done >= 1:
                        return done
            await asyncio.sleep(0.1)


async def test_a_worker_killed_mid_sweep_is_resumed_at_its_level(
        api, control_worker, optimizer_worker, gateway, settings, db_pool, temporal_client, start_worker, tiny):
    model = await available_model(api, settings, tiny)
    endpoint = await slow_running_endpoint(api, model["id"], await local_cluster_id(api))
    queue_settings = settings.model_copy(update={"control_queue": unique("bench-queue")})
    sweep = BenchmarkRequest(input_tokens=32, output_tokens=32, concurrency=[1, 2], requests_per_level=60)
    async with db_pool.acquire() as conn:
        run = await benchmark_runs.insert_run(conn, UUID(endpoint["project_id"]), UUID(endpoint["id"]),
                                              sweep.model_dump(mode="json"), benchmark_endpoint_workflow_id)
    first = start_worker(queue_settings)
    handle = await start_benchmark_endpoint(temporal_client, queue_settings, BenchmarkInput(
        run_id=run.id, endpoint_id=UUID(endpoint["id"]), project_id=UUID(endpoint["project_id"]), request=sweep))
    done_before_kill = await pending_level(handle, db_pool, run.id)
    first.kill()

    second = start_worker(queue_settings)
    try:
        levels = await asyncio.wait_for(handle.result(), timeout=180)
    finally:
        second.stop()
    first_level, level = levels
    assert first_level.attempts == 1 and first_level.resumed_requests == 0 and first_level.completed == 60
    assert level.attempts == 2 and level.completed == 60 and level.errors == 0, level
    assert level.resumed_requests >= 1, level  # the dead attempt's heartbeated requests were kept
    stored = await wait_run(api, endpoint["id"], str(run.id))
    assert stored["status"] == "COMPLETED" and [lv["attempts"] for lv in stored["levels"]] == [1, 2]
    measured = (await api.get("/api/measurements", params={"source_id": str(run.id)})).json()["items"]
    assert sorted(m["concurrency"] for m in measured) == [1, 2]
    history = await handle.fetch_history()
    scheduled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name == "run_benchmark_level"]
    assert len(scheduled) == 2  # the first level ran once; the second was retried, not scheduled again
    await api.delete(f"/api/endpoints/{endpoint['id']}")


@pytest.mark.record_history
async def test_record_benchmark_endpoint_history(api, control_worker, optimizer_worker, gateway, temporal_client,
                                                 settings, tiny):
    model = await available_model(api, settings, tiny)
    endpoint = await running_endpoint(api, model["id"], await local_cluster_id(api))
    started = await api.post(f"/api/endpoints/{endpoint['id']}/benchmark", json=SWEEP)
    run = await wait_run(api, endpoint["id"], started.json()["id"])
    assert run["status"] == "COMPLETED", run
    history = await temporal_client.get_workflow_handle(run["workflow_id"]).fetch_history()
    (HISTORIES / "benchmark_endpoint.json").write_text(history.to_json())
    await api.delete(f"/api/endpoints/{endpoint['id']}")
