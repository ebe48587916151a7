"""A model's objects changed or deleted after its scan: the deploy FAILS with the reason instead of retrying for ever,
and leaves no replica and no GPU reservation behind."""

from __future__ import annotations

import pytest

from core.objectstore import ObjectStore
from tests.deploy_helpers import (
    available_model,
    configure_manual,
    create_endpoint,
    local_cluster_id,
    runtime_processes,
    settled,
    wait_endpoint,
)
from tests.model_files import write_tiny_llama


async def tamper(settings, model: dict, how: str) -> None:
    prefix = model["source_path"].removeprefix(f"s3://{settings.models_bucket}/")
    key = f"{prefix}/model.safetensors"
    async with ObjectStore(settings) as store:
        if how == "changed":
            size = (await store.head(settings.models_bucket, key)).size
            await store.put_bytes(settings.models_bucket, key, b"\0" * size)  # same size, other bytes
        else:
            await store.delete(settings.models_bucket, key)


@pytest.mark.parametrize("how, reason", [("changed", "changed after the scan"), ("deleted", "gone from the store")])
async def test_objects_changed_after_the_scan_fail_the_deploy_with_the_reason(
        api, control_worker, optimizer_worker, settings, db_pool, tmp_path, how, reason):
    tiny = write_tiny_llama(tmp_path / "tiny")
    model = await available_model(api, settings, tiny)
    await tamper(settings, model, how)
    endpoint = await create_endpoint(api, model["id"], await local_cluster_id(api))
    await configure_manual(api, endpoint["id"])
    accepted = await api.post(f"/api/endpoints/{endpoint['id']}/deploy")
    assert accepted.status_code == 202, accepted.text
    failed = await wait_endpoint(api, endpoint["id"], settled, timeout=120)
    assert failed["status"] == "FAILED", failed
    assert reason in failed["error"]["reason"] and "model.safetensors" in failed["error"]["reason"]
    assert runtime_processes(endpoint["name"]) == []
    async with db_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gpu_reservations WHERE endpoint_id = $1", endpoint["id"]) == 0
