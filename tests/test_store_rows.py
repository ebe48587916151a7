"""The stores return frozen, typed rows: UUIDs, enums, JSONB as dicts, NULL as None."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import pydantic
import pytest

from control.payloads.clusters import ClusterSpec, ClusterStatus, GpuInventory
from control.payloads.deployments import EndpointCreate, EndpointStatus
from control.payloads.models import BenchmarkCreate, ModelRegistration, ModelStatus
from control.store import clusters, endpoints, models, projects, routes


async def test_stores_return_frozen_typed_rows(db_pool):
    suffix = uuid.uuid4().hex[:8]
    async with db_pool.acquire() as conn:
        project = await projects.create_project(conn, f"rows-{suffix}")
        try:
            cluster = await clusters.insert_cluster(conn, project.id, ClusterSpec(
                name=f"rows-{suffix}", kind="local", gpus=[GpuInventory(gpu_type="h100_sxm", count=2)]))
            model = await models.insert_model(conn, project.id, ModelRegistration(
                name=f"rows-{suffix}", architecture="llama", parameter_count=1000, context_length=2048,
                source_path=f"s3://models/rows-{suffix}"))
            endpoint = await endpoints.insert_endpoint(conn, EndpointCreate(
                name=f"rows-{suffix}", project_id=project.id, model_id=model.id, cluster_id=cluster.id))
            await endpoints.set_health(conn, endpoint.id, {"completion_latency_ms": 12.5})
            await endpoints.ensure_route(conn, endpoint.name, project.id, endpoint.id)
            await models.add_benchmark(conn, model.id, BenchmarkCreate(name="mmlu", score=61.5, details={"shots": 5}))
            scores = (await models.benchmarks(conn, [model.id]))[model.id]
            endpoint = await endpoints.get_endpoint(conn, endpoint.id)
            route = await routes.get_route(conn, endpoint.name, project.id)
        finally:
            await conn.execute("DELETE FROM projects WHERE id = $1", project.id)

    assert isinstance(cluster.id, UUID) and isinstance(cluster.created_at, datetime)
    assert cluster.status is ClusterStatus.REGISTERING
    assert cluster.gpus[0]["gpu_type"] == "nvidia-h100-80gb" and cluster.facts == {}  # JSONB arrives parsed
    assert model.status is ModelStatus.SCANNING
    assert model.facts is None and model.real_parameter_count is None  # NULL columns are None
    assert model.effective_parameter_count == 1000
    assert endpoint.status is EndpointStatus.PENDING and endpoint.config is None and endpoint.error is None
    assert endpoint.health == {"completion_latency_ms": 12.5}
    assert endpoint.performance_targets == {}
    assert [(b.name, b.score, b.details, b.unit) for b in scores] == [("mmlu", 61.5, {"shots": 5}, None)]
    # the backends come from json_agg: their endpoint ids arrive as UUIDs, their statuses as the enum
    assert [(b.endpoint_id, b.weight, b.status) for b in route.backends] == [(endpoint.id, 100, EndpointStatus.PENDING)]

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        endpoint.status = EndpointStatus.RUNNING  # a row is a reading, not a handle on the database
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cluster.facts = {"simulated_gpus": True}
