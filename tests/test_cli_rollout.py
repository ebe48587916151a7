"""`bud endpoints show|list|deploy` on a rolling update, against the API served over HTTP with the workers and the
gateway: the serving generation, the pending configuration as the fields it changes, UPDATING in its own colour
with the rollout's plan while it runs, the outcome afterwards, and a followed deploy that shows each step and ends
with the rollback's reason (exit 3). `--json` stays the API's answer."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from typer.testing import CliRunner

from cli.main import app as bud
from tests.deploy_helpers import (MANUAL_CONFIG, available_model, configure_manual, local_cluster_id, running_endpoint,
                                  wait_endpoint)
from tests.model_files import write_tiny_llama

UPDATING_IN_COLOUR = "\x1b[1;36mUPDATING\x1b[0m"  # bold cyan: no other status has it


@pytest.fixture(scope="module")
async def model(api, control_worker, settings, tmp_path_factory):
    return await available_model(api, settings, write_tiny_llama(tmp_path_factory.mktemp("cli-rollout") / "m"))


def runner_for(url: str, token: str):
    runner = CliRunner()

    async def bud_cli(*args: str, colour: bool = False):
        env = {"BUD_API_URL": url, "BUD_TOKEN": token, **({"FORCE_COLOR": "1"} if colour else {})}
        return await asyncio.to_thread(runner.invoke, bud, list(args), env=env)
    return bud_cli


def flat(output: str) -> str:
    """The output with the table's wrapping undone (every run of whitespace one space)."""
    return " ".join(output.split())


def settled_update(endpoint: dict) -> bool:
    return endpoint["status"] == "RUNNING" and (endpoint["rollout"] or {}).get("status") not in (None, "PENDING",
                                                                                                 "RUNNING")


@pytest.mark.timeout(600)  # two rolling updates on a loaded machine
async def test_show_list_and_deploy_follow_a_rolling_update_to_its_outcome(
        api, api_url, admin_token, control_worker, optimizer_worker, gateway, model):
    endpoint = await running_endpoint(api, model["id"], await local_cluster_id(api))
    endpoint_id, name = endpoint["id"], endpoint["name"]
    cli = runner_for(api_url, admin_token)
    try:
        before = await cli("endpoints", "show", name)
        assert before.exit_code == 0, before.output
        shown = flat(before.output)
        assert "generation 1 " in shown and "pending config - " in shown and "rollout - " in shown, shown

        # A configuration the replicas do not run yet: its differences, and nothing rolling yet.
        await configure_manual(api, endpoint_id, replicas=2, max_num_seqs=16)
        pending = flat((await cli("endpoints", "show", name)).output)
        assert "pending config max_num_seqs 8 -> 16; replicas 1 -> 2 " in pending, pending
        assert "max_num_seqs=8" in pending and "status RUNNING " in pending, pending

        started = await cli("endpoints", "deploy", name, "--no-follow")
        assert started.exit_code == 0, started.output
        assert f"rolling update of {name}: workflow" in flat(started.output)
        assert "plan: surge: up to 1 new replica(s)" in flat(started.output), started.output

        # While it runs: UPDATING in its own colour, in the list too, and the rollout with its plan.
        updating = await cli("endpoints", "show", name, colour=True)
        assert updating.exit_code == 0 and UPDATING_IN_COLOUR in updating.output, updating.output
        during = flat(re.sub(r"\x1b\[[0-9;]*m", "", updating.output))
        assert "step rolling update" in during and "plan: surge" in during, during
        assert re.search(r"rollout (PENDING|RUNNING)( generation 1 -> 2)?, \d/\d steps done", during), during
        assert "pending config max_num_seqs 8 -> 16; replicas 1 -> 2 " in during, during
        listed = await cli("endpoints", "list", colour=True)
        row = next(line for line in listed.output.splitlines() if name in line)
        assert UPDATING_IN_COLOUR in row, listed.output
        as_json = json.loads((await cli("endpoints", "show", name, "--json")).stdout)
        assert as_json["status"] == "UPDATING" and as_json["rollout"]["plan"].startswith("surge"), as_json
        assert set(as_json) == set((await api.get(f"/api/endpoints/{endpoint_id}")).json())

        await wait_endpoint(api, endpoint_id, settled_update, timeout=240)
        after = flat((await cli("endpoints", "show", name)).output)
        assert "status RUNNING " in after and "generation 2 " in after and "pending config - " in after, after
        assert re.search(r"rollout COMPLETED generation 1 -> 2, (\d)/\1 steps done plan: surge", after), after
        assert "max_num_seqs=16" in after, after

        # A generation that fails the warm-up gate (no first token within a microsecond), followed: each step, then
        # the rollback with its reason, exit 3; the old generation serves on and the configuration stays pending.
        response = await api.put(f"/api/endpoints/{endpoint_id}/config", json={
            "runtime": "vllm", "optimization_method": "MANUAL", "config": {**MANUAL_CONFIG, "max_num_seqs": 4},
            "replicas": 1, "performance_targets": {"max_ttft_ms": 0.001}})
        assert response.status_code == 202, response.text
        await wait_endpoint(api, endpoint_id, lambda e: e["optimization_status"] != "RUNNING")
        followed = await cli("endpoints", "deploy", name)
        assert followed.exit_code == 3, followed.output
        lines = flat(followed.output)
        assert "UPDATING: rolling update to generation 3: step 1/" in lines, followed.output
        assert f"RUNNING {name} rolling update ROLLED_BACK generation 2 -> 3, 0/" in lines, followed.output
        assert "warm-up" in lines and "rolled back to generation 2" in lines, followed.output
        rolled_back = flat((await cli("endpoints", "show", name)).output)
        assert "generation 2 " in rolled_back and "rollout ROLLED_BACK generation 2 -> 3" in rolled_back, rolled_back
        assert "reason: " in rolled_back and "warm-up" in rolled_back, rolled_back
        assert "pending config max_num_seqs 16 -> 4; replicas 2 -> 1 " in rolled_back, rolled_back
    finally:
        await api.delete(f"/api/endpoints/{endpoint_id}")
        await wait_endpoint(api, endpoint_id, lambda e: e["status"] in ("DELETED", "GONE"), timeout=120)
