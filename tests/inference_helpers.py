"""Rows the inference-traffic tests need without deploying anything: a project with its own priced cluster, a
RUNNING endpoint on it, and providers registered through the API."""

from __future__ import annotations

from tests.helpers import unique

# A public address (never contacted by these tests): provider URLs must not be private without the admin's leave.
PUBLIC_BASE_URL = "https://8.8.8.8/v1"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def new_project(api) -> tuple[str, str]:
    created = await api.post("/api/projects", json={"name": unique("team")})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["token"]


async def running_endpoint_row(db_pool, project_id: str, gpu_count: int = 2, price_per_hour: float = 2.0,
                               gpu_type: str = "nvidia-h100-80gb") -> tuple[str, str]:
    """(id, name) of an endpoint recorded RUNNING on a cluster of the project that prices its GPUs at
    `price_per_hour` (no replica runs: the rows are what the control plane reads)."""
    name = unique("ep")
    async with db_pool.acquire() as conn:
        cluster = await conn.fetchval(
            "INSERT INTO clusters (project_id, name, kind, gpus, status) VALUES ($1, $2, 'local', $3, 'READY') "
            "RETURNING id", project_id, unique("c"),
            [{"gpu_type": gpu_type, "count": 8, "price_per_hour": price_per_hour}])
        model = await conn.fetchval(
            "INSERT INTO models (project_id, name, version, architecture, parameter_count, context_length, "
            "source_path, bucket, prefix, status) VALUES ($1, $2, '1', 'llama', 1000000, 2048, 'x', 'models', 'x', "
            "'AVAILABLE') RETURNING id", project_id, unique("m"))
        endpoint = await conn.fetchval(
            "INSERT INTO endpoints (project_id, name, model_id, cluster_id, status, resources) "
            "VALUES ($1, $2, $3, $4, 'RUNNING', $5) RETURNING id",
            project_id, name, model, cluster, {"gpu_type": gpu_type, "gpu_count": gpu_count})
    return str(endpoint), name


async def create_provider(anon_api, token: str, name: str | None = None, models=("model-a", "model-b"),
                          price_in: float = 1.0, price_out: float = 3.0, api_key: str = "sk-provider-secret") -> dict:
    response = await anon_api.post("/api/providers", headers=bearer(token), json={
        "name": name or unique("prov"), "kind": "openai-compatible", "base_url": PUBLIC_BASE_URL,
        "api_key": api_key, "models": list(models), "price_per_mtok": {"input": price_in, "output": price_out}})
    assert response.status_code == 201, response.text
    return response.json()
