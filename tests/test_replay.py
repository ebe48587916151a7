"""Every recorded history under tests/histories replays with the current workflow code (no non-determinism).

Record new histories with `pytest tests/test_replay.py --record-histories`: it runs each scenario against the
real Temporal dev server and writes its history as JSON next to the old ones. Commit them: a later change that breaks
replay of a recorded run (one that is in flight in production) then fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.worker import Replayer

from core.payloads.clusters import ClusterSpec
from core.store import clusters as cluster_store
from core.temporal import DATA_CONVERTER
from tests.helpers import unique
from tests.test_register_cluster import unreachable_kubeconfig
from worker.queues import ALL_WORKFLOWS
from workflows.starters import start_register_cluster

HISTORIES = Path(__file__).parent / "histories"


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded_for_every_workflow():
    recorded_types = set()
    for path in recorded_histories():
        events = json.loads(path.read_text())["events"]
        recorded_types.add(events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])
    assert {workflow.__name__ for workflow in ALL_WORKFLOWS} <= recorded_types


@pytest.mark.parametrize("history_file", recorded_histories(), ids=lambda p: p.stem)
async def test_recorded_history_replays(history_file: Path):
    history = WorkflowHistory.from_json(history_file.stem, history_file.read_text())
    replayer = Replayer(workflows=ALL_WORKFLOWS, data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{history_file.name} no longer replays: {result.replay_failure}"


@pytest.mark.record_history
async def test_record_register_cluster_histories(control_worker, temporal_client, settings, db_pool):
    local = ClusterSpec(name=unique("recorded"), kind="local", gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    unreachable = ClusterSpec(name=unique("recorded"), kind="kubernetes", kubeconfig=unreachable_kubeconfig(),
                              gpus=[{"gpu_type": "nvidia-h100-80gb", "count": 8}])
    for file_name, spec in (("register_cluster_local", local), ("register_cluster_unreachable", unreachable)):
        async with db_pool.acquire() as conn:
            row = await cluster_store.insert_cluster(conn, None, spec, "test")
        handle = await start_register_cluster(temporal_client, settings, row["id"], spec)
        try:
            await handle.result()
        except WorkflowFailureError:
            pass  # the failure path is worth recording too
        history = await handle.fetch_history()
        (HISTORIES / f"{file_name}.json").write_text(history.to_json())


@pytest.mark.record_history
async def test_record_register_model_histories(api, control_worker, temporal_client, settings, tmp_path):
    from registry.testdata import write_eicar_file, write_tiny_llama
    from tests.registry_helpers import register_and_wait, upload

    clean = write_tiny_llama(tmp_path / "clean")
    infected = write_tiny_llama(tmp_path / "infected")
    write_eicar_file(infected.path / "payload.dat")
    scenarios = {
        "register_model_available": await upload(settings, clean.path),
        "register_model_quarantined": await upload(settings, infected.path),
        "register_model_failed": unique("empty-prefix"),
    }
    for file_name, prefix in scenarios.items():
        model = await register_and_wait(api, settings, prefix, parameter_count=clean.parameter_count)
        history = await temporal_client.get_workflow_handle(model["workflow_id"]).fetch_history()
        (HISTORIES / f"{file_name}.json").write_text(history.to_json())
