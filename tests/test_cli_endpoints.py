"""The `bud endpoints`, `bud keys` and `bud usage` commands against the API as `python -m api` serves it: the
walkthrough by names alone (create, configure with targets, deploy followed to RUNNING, show, a key, usage, delete),
`--json` answers that parse, and exit codes a script can rely on (1 refused with the API's message, 2 usage error,
3 a followed deploy FAILED). Names resolve within the token's project only."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app as bud
from core.processes import free_port
from devstack import services
from tests.deploy_helpers import available_model, local_cluster_id, wait_endpoint
from tests.helpers import unique
from tests.model_files import write_tiny_llama

WORKLOAD = ["--input-tokens", "256", "--output-tokens", "64", "--concurrency", "8"]


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("cli-endpoints") / "m"))


API_STARTUP_S = 600  # `python -m api` imports for a minute when the machine's other tests load every core


@pytest.fixture(scope="module")
async def api_url(settings, state_dir, db_pool, app):
    """The API as `python -m api` serves it, for the commands (they reach it over HTTP like a user's)."""
    port = free_port()
    process = services.python_service(
        unique("api-cli"), ["api"], state_dir, {**settings.as_environment(), "BUD_API_PORT": str(port)},
        health_url=f"http://127.0.0.1:{port}/healthz")
    process.startup_timeout_s = API_STARTUP_S
    process.start()
    try:
        await asyncio.to_thread(process.wait_healthy)
        yield f"http://127.0.0.1:{port}"
    finally:
        await asyncio.to_thread(process.stop)


def runner_for(url: str, token: str):
    runner = CliRunner()

    async def bud_cli(*args: str):
        return await asyncio.to_thread(runner.invoke, bud, list(args), env={"BUD_API_URL": url, "BUD_TOKEN": token})
    return bud_cli


async def test_the_walkthrough_by_names_from_create_to_delete(
        api, api_url, admin_token, control_worker, optimizer_worker, gateway, model, settings):
    await local_cluster_id(api)
    cli = runner_for(api_url, admin_token)
    name = unique("cli-ep")

    created = await cli("endpoints", "create", name, "--model", model["name"], "--json")
    assert created.exit_code == 0, created.output
    endpoint = json.loads(created.stdout)
    assert (endpoint["name"], endpoint["model_id"], endpoint["status"]) == (name, model["id"], "PENDING")

    configured = await cli("endpoints", "config", name, "--runtime", "vllm", "--max-latency-ms", "2000",
                           "--min-throughput-tps", "100", *WORKLOAD)
    assert configured.exit_code == 0, configured.output
    assert "REGRESSOR" in configured.output and "/namespaces/default/workflows/" in configured.output

    deployed = await cli("endpoints", "deploy", name)
    assert deployed.exit_code == 0, deployed.output
    assert "RUNNING" in deployed.output and "waiting for the optimizer" in deployed.output, deployed.output
    workflow_link = f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}/workflows/"
    assert workflow_link in deployed.output

    shown = await cli("endpoints", "show", name, "--json")
    assert shown.exit_code == 0, shown.output
    running = json.loads(shown.stdout)
    assert running["status"] == "RUNNING" and running["deployment"]["config"]["tensor_parallel_size"] >= 1
    assert f"{workflow_link}{running['workflow_id']}" in deployed.output
    by_id = await cli("endpoints", "show", running["id"], "--json")
    assert json.loads(by_id.stdout) == {**running, "updated_at": json.loads(by_id.stdout)["updated_at"]}
    listed = await cli("endpoints", "list", "--json")
    assert name in [row["name"] for row in json.loads(listed.stdout)]
    table = await cli("endpoints", "list")
    assert table.exit_code == 0 and name in table.output
    readable = await cli("endpoints", "show", name)
    assert readable.exit_code == 0 and "RUNNING" in readable.output and "max_latency_ms=2000.0" in readable.output

    scaled = await cli("endpoints", "scale", name, "2", "--json")
    assert scaled.exit_code == 0 and json.loads(scaled.stdout)["step"] == "scaling to 2", scaled.output
    two = await wait_endpoint(api, running["id"], lambda e: e["deployment"]["ready_replicas"] == 2, timeout=90)
    assert (two["status"], two["deployment"]["replicas"]) == ("RUNNING", 2)

    key = await cli("keys", "create", "--name", "chat", "--route", name, "--rpm", "600")
    assert key.exit_code == 0, key.output
    secret = next(line for line in key.output.splitlines() if line.startswith("bud-sk-"))
    keys = json.loads((await cli("keys", "list", "--json")).stdout)
    mine = next(row for row in keys if secret.startswith(row["prefix"]) and row["name"] == "chat")
    assert (mine["routes"], mine["rpm"], mine["revoked_at"]) == ([name], 600, None)
    assert secret not in (await cli("keys", "list")).output  # shown once: lists show the prefix

    # One request with the new key through the gateway shows in `bud usage` under the endpoint's route.
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        async with asyncio.timeout(20):  # the gateway polls its keys and routes
            while True:
                served = await client.get(f"{gateway}/models")
                if served.status_code == 200 and name in [m["id"] for m in served.json()["data"]]:
                    break
                await asyncio.sleep(0.2)
        answer = await client.post(f"{gateway}/chat/completions", json={
            "model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert answer.status_code == 200, answer.text
    async with asyncio.timeout(30):
        while True:
            usage = await cli("usage", "--group-by", "route", "--json")
            assert usage.exit_code == 0, usage.output
            report = json.loads(usage.stdout)
            routes = {group["group"]: group for group in report["groups"]}
            if name in routes:
                break
            await asyncio.sleep(0.5)
    assert report["group_by"] == "route" and routes[name]["requests"] == 1 and routes[name]["errors"] == 0
    assert routes[name]["completion_tokens"] >= 1
    assert "total" in (await cli("usage")).output

    revoked = await cli("keys", "revoke", "chat", "--json")
    assert revoked.exit_code == 0 and json.loads(revoked.stdout)["revoked_at"] is not None, revoked.output

    deleted = await cli("endpoints", "delete", name, "--json")
    assert deleted.exit_code == 0 and json.loads(deleted.stdout)["status"] == "DELETING", deleted.output
    gone = await wait_endpoint(api, running["id"], lambda e: False, timeout=90)
    assert gone == {"status": "GONE"}
    after = await cli("endpoints", "show", name)
    assert after.exit_code == 1 and f"no endpoint named {name!r}" in after.output


async def test_refusals_and_failures_have_their_exit_codes(
        api, anon_api, api_url, admin_token, control_worker, optimizer_worker, model):
    await local_cluster_id(api)
    cli = runner_for(api_url, admin_token)
    name = unique("cli-ep")
    assert (await cli("endpoints", "create", name, "--model", model["id"])).exit_code == 0

    missing = await cli("endpoints", "show", "no-such-endpoint")
    assert missing.exit_code == 1 and "no endpoint named 'no-such-endpoint'" in missing.output
    again = await cli("endpoints", "create", name, "--model", model["name"])
    assert again.exit_code == 1 and f"an endpoint named {name!r} exists" in again.output
    unknown_model = await cli("endpoints", "create", unique("cli-ep"), "--model", "no-such-model")
    assert unknown_model.exit_code == 1 and "no model named 'no-such-model'" in unknown_model.output
    bad_route = await cli("keys", "create", "--name", "x", "--route", "no-such-route")
    assert bad_route.exit_code == 1 and "no route or endpoint named 'no-such-route'" in bad_route.output

    mixed = await cli("endpoints", "config", name, "--method", "REGRESSOR", "--tensor-parallel-size", "2")
    assert mixed.exit_code == 2 and "--method MANUAL" in mixed.output
    assert (await cli("endpoints", "scale", name)).exit_code == 2  # REPLICAS missing
    assert (await cli("endpoints", "config", name, "--runtime", "llamacpp")).exit_code == 2
    assert (await cli("usage", "--group-by", "model")).exit_code == 2
    unreachable = await runner_for("http://127.0.0.1:9", admin_token)("endpoints", "list")
    assert unreachable.exit_code == 1 and "cannot reach the API at http://127.0.0.1:9" in unreachable.output

    # A manual configuration: checked and predicted, then it is the endpoint's config.
    manual = await cli("endpoints", "config", name, "--method", "MANUAL", "--tensor-parallel-size", "1",
                       "--max-model-len", "2048", "--max-num-seqs", "8", "--replicas", "1", "--wait", "--json")
    assert manual.exit_code == 0, manual.output
    chosen = json.loads(manual.stdout)
    assert chosen["optimization_method"] == "MANUAL" and chosen["optimization_status"] != "RUNNING"
    assert (chosen["deployment"]["config"]["max_num_seqs"], chosen["deployment"]["config"]["max_model_len"]) == (8, 2048)
    too_long = await cli("endpoints", "config", name, "--method", "MANUAL", "--max-model-len", "100000000")
    assert too_long.exit_code == 1 and "max_model_len" in too_long.output, too_long.output

    # Targets no config meets: the followed deploy ends FAILED with the optimizer's reason and exit 3.
    configured = await cli("endpoints", "config", name, "--max-ttft-ms", "0.001", "--min-throughput-tps", "1e12",
                           *WORKLOAD, "--json")
    assert configured.exit_code == 0 and json.loads(configured.stdout)["optimization_status"] == "RUNNING"
    failed = await cli("endpoints", "deploy", name)
    assert failed.exit_code == 3, failed.output
    assert "FAILED" in failed.output and "reason" in failed.output and "/workflows/" in failed.output
    no_follow = await cli("endpoints", "deploy", name, "--no-follow", "--json")
    assert no_follow.exit_code == 0 and json.loads(no_follow.stdout)["status"] == "DEPLOYING", no_follow.output

    # Another project's token finds neither the name nor the id.
    other = (await api.post("/api/projects", json={"name": unique("cli-other")})).json()
    stranger = runner_for(api_url, other["token"])
    by_name = await stranger("endpoints", "show", name)
    assert by_name.exit_code == 1 and f"no endpoint named {name!r}" in by_name.output
    endpoint_id = next(row["id"] for row in (await api.get("/api/endpoints")).json() if row["name"] == name)
    by_id = await stranger("endpoints", "delete", endpoint_id)
    assert by_id.exit_code == 1 and "not found" in by_id.output.lower(), by_id.output
    assert (await api.get(f"/api/endpoints/{endpoint_id}")).status_code == 200
    assert (await cli("endpoints", "delete", name)).exit_code == 0
    # The --no-follow deploy above runs the closest config (every GPU of the local cluster): the tests that follow
    # need them back.
    assert await wait_endpoint(api, endpoint_id, lambda e: False, timeout=120) == {"status": "GONE"}
