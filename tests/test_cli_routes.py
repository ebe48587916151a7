"""`bud routes`, `bud clusters` and `bud models make-example|upload|list|show` against the API as `python -m api`
serves it: a model folder a new user makes and uploads with the CLI alone; routes set by endpoint names, shifts
followed to their outcome (a blue-green swap COMPLETED, a gradual step without traffic FAILED with exit 3, a running
shift aborted), reverted to the weights before the last shift; `--json` equal to the API's JSON; exit codes 0, 1
(the API refused, its message printed), 2 (usage) and 3 (a followed shift did not complete)."""

from __future__ import annotations

import json

import pytest

from tests.deploy_helpers import available_model, local_cluster_id, running_endpoint, wait_endpoint
from tests.helpers import unique
from tests.model_files import write_tiny_llama
from tests.test_cli_endpoints import api_url, runner_for  # noqa: F401 (api_url is a fixture)


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("cli-routes") / "m"))


def weights(route: dict) -> dict[str, int]:
    return {backend["endpoint_name"]: backend["weight"] for backend in route["backends"]}


async def test_a_new_user_makes_an_example_model_and_uploads_it(api, api_url, admin_token, control_worker, tmp_path):
    cli = runner_for(api_url, admin_token)
    folder = tmp_path / "my-model"
    made = await cli("models", "make-example", str(folder))
    assert made.exit_code == 0, made.output
    assert f"bud models upload {folder}" in made.output
    assert sorted(path.name for path in folder.iterdir()) == [
        "LICENSE", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]
    again = await cli("models", "make-example", str(folder))
    assert again.exit_code == 2 and "not empty" in again.output

    name = unique("example")
    uploaded = await cli("models", "upload", str(folder), "--name", name, "--license", "apache-2.0")
    assert uploaded.exit_code == 0, uploaded.output
    assert "AVAILABLE" in uploaded.output
    shown = json.loads((await cli("models", "show", name, "--json")).stdout)
    assert shown == (await api.get(f"/api/models/{shown['id']}")).json()
    assert (shown["status"], shown["architecture"], shown["license"]) == ("AVAILABLE", "llama", "Apache-2.0")
    listed = await cli("models", "list", "--json", "--limit", "200")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == (await api.get(
        "/api/models", params={"sort": "created_at", "limit": 200})).json()
    assert name in (await cli("models", "list", "--limit", "200")).output
    missing = await cli("models", "show", "no-such-model")
    assert missing.exit_code == 1 and "no model named 'no-such-model'" in missing.output


async def test_clusters_by_name(api, api_url, admin_token, control_worker):
    cluster_id = await local_cluster_id(api)
    cli = runner_for(api_url, admin_token)
    listed = await cli("clusters", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.stdout) == (await api.get("/api/clusters")).json()
    local = json.loads((await cli("clusters", "show", "local", "--json")).stdout)
    assert local == (await api.get(f"/api/clusters/{cluster_id}")).json()
    readable = await cli("clusters", "show", "local")
    assert readable.exit_code == 0 and local["gpus"][0]["gpu_type"] in readable.output and "READY" in readable.output
    assert "local" in (await cli("clusters", "list")).output
    unknown = await cli("clusters", "show", "no-such-cluster")
    assert unknown.exit_code == 1 and "no cluster named 'no-such-cluster'" in unknown.output


@pytest.mark.timeout(900)  # two deploys and four shifts: over 300 s on a loaded machine
async def test_routes_set_shift_abort_and_revert_by_names(
        api, api_url, admin_token, control_worker, optimizer_worker, gateway, model, settings):
    cluster_id = await local_cluster_id(api)
    blue = await running_endpoint(api, model["id"], cluster_id)
    green = await running_endpoint(api, model["id"], cluster_id)
    cli = runner_for(api_url, admin_token)
    route = unique("cli-route")
    ui_link = f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}/workflows/"
    try:
        published = await cli("routes", "set", route, f"{blue['name']}=100", f"{green['name']}=0", "--json")
        assert published.exit_code == 0, published.output
        answer = json.loads(published.stdout)
        assert answer["propagated"] is True and weights(answer) == {blue["name"]: 100, green["name"]: 0}
        shown = await cli("routes", "show", route, "--json")
        assert json.loads(shown.stdout) == (await api.get(f"/api/routes/{route}")).json()
        listed = json.loads((await cli("routes", "list", "--json")).stdout)
        assert listed == (await api.get("/api/routes")).json() and route in [r["name"] for r in listed]
        readable = await cli("routes", "show", route)
        assert readable.exit_code == 0 and blue["name"] in readable.output and "100 %" in readable.output

        # Refusals: by the API (exit 1, its message) and by the command line (exit 2).
        unknown = await cli("routes", "show", unique("none"))
        assert unknown.exit_code == 1 and "not found" in unknown.output
        bad_sum = await cli("routes", "set", route, f"{blue['name']}=90")
        assert bad_sum.exit_code == 1 and "add up to 100" in bad_sum.output, bad_sum.output
        assert (await cli("routes", "set", route, f"{blue['name']}=lots")).exit_code == 2
        unknown_endpoint = await cli("routes", "set", route, "no-such-endpoint=100")
        assert unknown_endpoint.exit_code == 1 and "no endpoint named 'no-such-endpoint'" in unknown_endpoint.output
        assert (await cli("routes", "shift", route, "--to", green["name"], "--steps", "ten,100")).exit_code == 2
        assert (await cli("routes", "shift", route, "--to", green["name"], "--strategy", "canary")).exit_code == 2
        nothing = await cli("routes", "revert", route)
        assert nothing.exit_code == 1 and "no shift to revert" in nothing.output
        assert weights((await api.get(f"/api/routes/{route}")).json()) == {blue["name"]: 100, green["name"]: 0}

        # A gradual step that sees no traffic fails once its wait is over: FAILED, the reason, exit 3.
        starved = await cli("routes", "shift", route, "--to", green["name"], "--steps", "50,100", "--step-interval",
                            "0.5", "--min-requests", "5", "--traffic-wait", "0", "--drain", "0")
        assert starved.exit_code == 3, starved.output
        assert "FAILED" in starved.output and "reason" in starved.output and ui_link in starved.output
        assert "step 50 %: insufficient (0 canary requests" in starved.output, starved.output
        assert weights((await api.get(f"/api/routes/{route}")).json()) == {blue["name"]: 100, green["name"]: 0}

        # A running shift is aborted, not reverted; the abort puts every weight back.
        started = await cli("routes", "shift", route, "--to", green["name"], "--steps", "50,100", "--step-interval",
                            "600", "--no-follow", "--json")
        assert started.exit_code == 0 and json.loads(started.stdout)["shift"]["status"] == "RUNNING", started.output
        busy = await cli("routes", "revert", route)
        assert busy.exit_code == 1 and f"bud routes abort {route}" in busy.output
        aborted = await cli("routes", "abort", route, "--reason", "changed my mind", "--json")
        assert aborted.exit_code == 0, aborted.output
        rolled_back = json.loads(aborted.stdout)
        assert (rolled_back["shift"]["status"], rolled_back["shift"]["reason"]) == ("ROLLED_BACK", "changed my mind")
        assert weights(rolled_back) == {blue["name"]: 100, green["name"]: 0}
        again = await cli("routes", "abort", route)
        assert again.exit_code == 1 and "no traffic shift is running" in again.output

        # Blue-green, followed: COMPLETED with the Temporal link; revert brings the weights before it back.
        swapped = await cli("routes", "shift", route, "--to", green["name"], "--strategy", "blue-green", "--drain", "0")
        assert swapped.exit_code == 0, swapped.output
        assert "COMPLETED" in swapped.output and ui_link in swapped.output
        assert weights((await api.get(f"/api/routes/{route}")).json()) == {green["name"]: 100}
        reverted = await cli("routes", "revert", route, "--json")
        assert reverted.exit_code == 0, reverted.output
        assert weights(json.loads(reverted.stdout)) == {blue["name"]: 100, green["name"]: 0}
        assert weights((await api.get(f"/api/routes/{route}")).json()) == {blue["name"]: 100, green["name"]: 0}
    finally:
        for endpoint in (blue, green):
            await api.delete(f"/api/endpoints/{endpoint['id']}")
        for endpoint in (blue, green):
            await wait_endpoint(api, endpoint["id"], lambda e: False, timeout=120)
