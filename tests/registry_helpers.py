"""Helpers for registry tests: upload a folder to the test S3 and register it through the API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devstack.s3_seed import upload_folder
from core.settings import Settings
from tests.helpers import unique


ADMIN_PROJECT = "default"  # the project of the admin token the `api` fixture sends


async def upload(settings: Settings, folder: Path, prefix: str | None = None, project: str = ADMIN_PROJECT) -> str:
    """Upload into the project's key space (s3://models/<project>/...); returns the prefix."""
    prefix = prefix or f"{project}/{unique('model')}"
    await asyncio.to_thread(upload_folder, settings, folder, settings.models_bucket, prefix)
    return prefix


def registration(settings: Settings, prefix: str, **overrides) -> dict:
    body = {"name": unique("m"), "architecture": "llama", "parameter_count": 1, "context_length": 2048,
            "source_path": f"s3://{settings.models_bucket}/{prefix}", "license": "apache-2.0"}
    return {**body, **overrides}


async def wait_settled(api, model_id: str, timeout: float = 120) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            model = (await api.get(f"/api/models/{model_id}")).json()
            if model["status"] != "SCANNING":
                return model
            await asyncio.sleep(0.2)


async def register_and_wait(api, settings: Settings, prefix: str, **overrides) -> dict:
    response = await api.post("/api/models", json=registration(settings, prefix, **overrides))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "SCANNING"
    return await wait_settled(api, response.json()["id"])
