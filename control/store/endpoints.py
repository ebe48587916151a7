"""Endpoint rows, GPU reservations, replicas and routes. Every write is idempotent (workflows retry)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from control.payloads.deployments import (
    EndpointCreate,
    EndpointProgress,
    EndpointStatus,
    OptimizationMethod,
    ReplicaState,
    Runtime,
)
from control.store.optimizations import OptimizationStatus
from control.store.rows import Row

COLUMNS = """id, project_id, name, model_id, cluster_id, status, step, runtime, optimization_method,
    performance_targets, config, replicas, resources, recommendation, optimization_status, optimization_workflow_id,
    workflow_id, inference_url, error, keep_on_failure, health, ready_replicas, autoscaling, autoscaling_state,
    monitoring, deployed, previous_deployed, rollout, created_at, updated_at"""


class EndpointRow(Row):
    """An endpoint: the user's intent (model, cluster, config) and what the workflows wrote (status, health, ...)."""

    id: UUID
    project_id: UUID
    name: str
    model_id: UUID
    cluster_id: UUID
    status: EndpointStatus
    step: str | None
    runtime: Runtime
    optimization_method: OptimizationMethod | None
    performance_targets: dict[str, Any]
    config: dict[str, Any] | None  # RuntimeConfig
    replicas: int
    resources: dict[str, Any] | None  # Resources
    recommendation: dict[str, Any] | None  # the optimizer's OptimizationResult
    optimization_status: OptimizationStatus | None
    optimization_workflow_id: str | None
    workflow_id: str | None
    inference_url: str | None
    error: dict[str, Any] | None  # {"step", "reason"} of the last failure
    keep_on_failure: bool
    health: dict[str, Any] | None
    ready_replicas: int
    autoscaling: dict[str, Any] | None  # AutoscalingSpec
    autoscaling_state: dict[str, Any] | None
    monitoring: dict[str, Any] | None
    deployed: dict[str, Any] | None  # DeployedGeneration: what the replicas run
    previous_deployed: dict[str, Any] | None  # the generation the last rolling update replaced
    rollout: dict[str, Any] | None  # the last rolling update's plan and progress
    created_at: datetime
    updated_at: datetime


class InsufficientGpus(Exception):
    pass


async def insert_endpoint(conn: asyncpg.Connection, body: EndpointCreate) -> EndpointRow | None:
    """None when the name is taken (endpoint names are route names: unique across projects)."""
    return EndpointRow.one(await conn.fetchrow(
        f"""INSERT INTO endpoints (project_id, name, model_id, cluster_id) VALUES ($1, $2, $3, $4)
            ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}""",
        body.project_id, body.name, body.model_id, body.cluster_id,
    ))


async def get_endpoint(conn: asyncpg.Connection, endpoint_id: UUID, project_id: UUID | None = None) -> EndpointRow | None:
    if project_id is None:
        return EndpointRow.one(await conn.fetchrow(f"SELECT {COLUMNS} FROM endpoints WHERE id = $1", endpoint_id))
    return EndpointRow.one(await conn.fetchrow(f"SELECT {COLUMNS} FROM endpoints WHERE id = $1 AND project_id = $2",
                                               endpoint_id, project_id))


async def list_endpoints(conn: asyncpg.Connection, project_id: UUID) -> list[EndpointRow]:
    return EndpointRow.many(await conn.fetch(f"SELECT {COLUMNS} FROM endpoints WHERE project_id = $1 AND "
                                             "status <> 'DELETED' ORDER BY created_at", project_id))


async def ids_with_status(conn: asyncpg.Connection, status: EndpointStatus) -> list[UUID]:
    """Every project's endpoints in a status, oldest first."""
    rows = await conn.fetch("SELECT id FROM endpoints WHERE status = $1 ORDER BY created_at", status.value)
    return [row["id"] for row in rows]


async def statuses(conn: asyncpg.Connection, endpoint_ids: list[UUID]) -> dict[UUID, EndpointStatus]:
    """The status of each endpoint that still has a row (deleted rows are gone from the result)."""
    rows = await conn.fetch("SELECT id, status FROM endpoints WHERE id = ANY($1::uuid[])", endpoint_ids)
    return {row["id"]: EndpointStatus(row["status"]) for row in rows}


async def set_configuration(conn: asyncpg.Connection, endpoint_id: UUID, *, runtime: Runtime, method: str,
                            targets: dict, config: dict | None, replicas: int, resources: dict | None,
                            recommendation: dict | None, optimization_status: OptimizationStatus | None,
                            optimization_workflow_id: str | None) -> None:
    await conn.execute(
        """UPDATE endpoints SET runtime = $2, optimization_method = $3, performance_targets = $4, config = $5,
               replicas = $6, resources = $7, recommendation = $8, optimization_status = $9,
               optimization_workflow_id = $10, updated_at = now()
           WHERE id = $1""",
        endpoint_id, runtime, method, targets, config, replicas, resources, recommendation, optimization_status,
        optimization_workflow_id,
    )


async def record_recommendation(conn: asyncpg.Connection, endpoint_id: UUID, status: OptimizationStatus,
                                recommendation: dict | None, config: dict | None, replicas: int | None,
                                resources: dict | None) -> None:
    """The optimizer's outcome; the chosen config becomes the endpoint's config when one was found."""
    await conn.execute(
        """UPDATE endpoints SET optimization_status = $2, recommendation = $3, config = COALESCE($4, config),
               replicas = COALESCE($5, replicas), resources = COALESCE($6, resources), updated_at = now()
           WHERE id = $1""",
        endpoint_id, status, recommendation, config, replicas, resources,
    )


async def set_workflow(conn: asyncpg.Connection, endpoint_id: UUID, workflow_id: str, keep_on_failure: bool) -> None:
    await conn.execute(
        """UPDATE endpoints SET workflow_id = $2, keep_on_failure = $3, status = 'DEPLOYING', step = 'queued',
               error = NULL, updated_at = now() WHERE id = $1""",
        endpoint_id, workflow_id, keep_on_failure,
    )


async def set_progress(conn: asyncpg.Connection, progress: EndpointProgress) -> None:
    error = {"step": progress.error_step, "reason": progress.error_reason} if progress.error_reason else None
    await conn.execute(
        """UPDATE endpoints SET status = $2, step = $3, error = $4, inference_url = COALESCE($5, inference_url),
               updated_at = now()
           WHERE id = $1 AND (status <> 'DELETED' OR $2 = 'DELETED')""",
        progress.endpoint_id, progress.status.value, progress.step, error, progress.inference_url,
    )


async def set_status(conn: asyncpg.Connection, endpoint_id: UUID, status: EndpointStatus, step: str | None = None) -> None:
    await conn.execute("UPDATE endpoints SET status = $2, step = $3, updated_at = now() WHERE id = $1",
                       endpoint_id, status.value, step)


async def set_health(conn: asyncpg.Connection, endpoint_id: UUID, health: dict | None) -> None:
    await conn.execute("UPDATE endpoints SET health = $2 WHERE id = $1", endpoint_id, health)


async def set_autoscaling(conn: asyncpg.Connection, endpoint_id: UUID, spec: dict, state: dict) -> None:
    await conn.execute("UPDATE endpoints SET autoscaling = $2, autoscaling_state = $3, updated_at = now() WHERE id = $1",
                       endpoint_id, spec, state)


async def set_autoscaling_state(conn: asyncpg.Connection, endpoint_id: UUID, state: dict) -> None:
    await conn.execute("UPDATE endpoints SET autoscaling_state = $2 WHERE id = $1", endpoint_id, state)


async def set_monitoring(conn: asyncpg.Connection, endpoint_id: UUID, snapshot: dict) -> None:
    await conn.execute("UPDATE endpoints SET monitoring = $2 WHERE id = $1", endpoint_id, snapshot)


async def set_replicas_count(conn: asyncpg.Connection, endpoint_id: UUID, replicas: int, ready: int) -> None:
    """The count now serving (a scale, the autoscaler); the serving generation's record follows it."""
    await conn.execute(
        """UPDATE endpoints SET replicas = $2, ready_replicas = $3, updated_at = now(),
               deployed = CASE WHEN deployed IS NULL THEN NULL ELSE jsonb_set(jsonb_set(deployed, '{replicas}',
                   to_jsonb($2::integer)), '{spec,replicas}', to_jsonb($2::integer)) END
           WHERE id = $1""",
        endpoint_id, replicas, ready)


async def set_deployed(conn: asyncpg.Connection, endpoint_id: UUID, deployed: dict, replaced: dict | None = None) -> None:
    """Record the generation the replicas run; `replaced`, the one a rolling update took over from (revert's
    target). A first deploy forgets any earlier record."""
    await conn.execute("UPDATE endpoints SET deployed = $2, previous_deployed = $3 WHERE id = $1",
                       endpoint_id, deployed, replaced)


async def set_rollout(conn: asyncpg.Connection, endpoint_id: UUID, rollout: dict) -> None:
    await conn.execute("UPDATE endpoints SET rollout = $2 WHERE id = $1", endpoint_id, rollout)


async def configure_as(conn: asyncpg.Connection, endpoint_id: UUID, generation: dict) -> None:
    """Make a generation's configuration the endpoint's configuration again (revert: nothing stays pending)."""
    await conn.execute(
        """UPDATE endpoints SET runtime = $2, config = $3, resources = $4, replicas = $5, updated_at = now()
           WHERE id = $1""",
        endpoint_id, generation["runtime"], generation["config"], generation["resources"], generation["replicas"])


async def set_updating(conn: asyncpg.Connection, endpoint_id: UUID, workflow_id: str, step: str) -> None:
    await conn.execute(
        """UPDATE endpoints SET workflow_id = $2, status = 'UPDATING', step = $3, error = NULL, updated_at = now()
           WHERE id = $1""",
        endpoint_id, workflow_id, step)


async def last_request_at(conn: asyncpg.Connection, endpoint_id: UUID) -> datetime | None:
    """When the gateway last saw a request for the endpoint (endpoint_demand, written at most once a second)."""
    return await conn.fetchval("SELECT last_request_at FROM endpoint_demand WHERE endpoint_id = $1", endpoint_id)


# ------------------------------------------------------------------------------------------------ GPUs
async def reserve_gpus(conn: asyncpg.Connection, cluster_id: UUID, endpoint_id: UUID, gpu_type: str, count: int) -> None:
    """Hold `count` GPUs of a type for the endpoint (replacing what it held). Raises InsufficientGpus with the numbers."""
    async with conn.transaction():
        cluster = await conn.fetchrow("SELECT gpus, name FROM clusters WHERE id = $1 FOR UPDATE", cluster_id)
        total = sum(pool["count"] for pool in cluster["gpus"] if pool["gpu_type"] == gpu_type)
        held_by_others = await conn.fetchval(
            "SELECT COALESCE(sum(count), 0) FROM gpu_reservations WHERE cluster_id = $1 AND gpu_type = $2 "
            "AND endpoint_id <> $3", cluster_id, gpu_type, endpoint_id)
        free = total - held_by_others
        if count > free:
            raise InsufficientGpus(
                f"not enough GPUs on cluster {cluster['name']!r}: need {count} {gpu_type}, {free} free of {total}")
        if count == 0:
            await conn.execute("DELETE FROM gpu_reservations WHERE cluster_id = $1 AND endpoint_id = $2",
                               cluster_id, endpoint_id)
            return
        await conn.execute(
            """INSERT INTO gpu_reservations (cluster_id, endpoint_id, gpu_type, count) VALUES ($1, $2, $3, $4)
               ON CONFLICT (cluster_id, endpoint_id) DO UPDATE SET gpu_type = EXCLUDED.gpu_type, count = EXCLUDED.count""",
            cluster_id, endpoint_id, gpu_type, count,
        )


async def release_gpus(conn: asyncpg.Connection, endpoint_id: UUID) -> None:
    await conn.execute("DELETE FROM gpu_reservations WHERE endpoint_id = $1", endpoint_id)


async def free_gpus(conn: asyncpg.Connection, cluster_id: UUID, gpu_type: str, excluding: UUID | None = None) -> tuple[int, int]:
    """(free, total) GPUs of a type on a cluster."""
    cluster = await conn.fetchrow("SELECT gpus FROM clusters WHERE id = $1", cluster_id)
    total = sum(pool["count"] for pool in cluster["gpus"] if pool["gpu_type"] == gpu_type)
    held = await conn.fetchval(
        "SELECT COALESCE(sum(count), 0) FROM gpu_reservations WHERE cluster_id = $1 AND gpu_type = $2 "
        "AND endpoint_id IS DISTINCT FROM $3", cluster_id, gpu_type, excluding)
    return total - held, total


# ------------------------------------------------------------------------------------------------ replicas, routes
async def ready_replica_urls(conn: asyncpg.Connection, endpoint_id: UUID) -> list[str]:
    rows = await conn.fetch("SELECT url FROM endpoint_replicas WHERE endpoint_id = $1 AND ready ORDER BY name",
                            endpoint_id)
    return [row["url"] for row in rows]


async def replace_replicas(conn: asyncpg.Connection, endpoint_id: UUID, replicas: list[ReplicaState],
                           pods: int | None = None) -> None:
    """Record the routable replicas. `pods` is the release's replica count: when one row stands for more pods (a
    Kubernetes Service balancing them), each pod's GPU time is kept as its own lifetime."""
    async with conn.transaction():
        await conn.execute("DELETE FROM endpoint_replicas WHERE endpoint_id = $1", endpoint_id)
        await conn.executemany(
            "INSERT INTO endpoint_replicas (endpoint_id, name, url, ready) VALUES ($1, $2, $3, $4)",
            [(endpoint_id, r.name, r.url, r.ready) for r in replicas if r.url],
        )
        names = [r.name for r in replicas if r.url]
        if pods is not None and len(replicas) == 1 and pods > 1 and names:
            names = [f"{names[0]}#{index}" for index in range(pods)]
        await track_replica_lifetimes(conn, endpoint_id, names)


async def mark_replicas_unready(conn: asyncpg.Connection, endpoint_id: UUID, urls: list[str]) -> int:
    """Take replicas out of the route before they stop (the gateways route to ready rows only); returns how many
    rows changed (0 when they already left: draining again changes nothing)."""
    status = await conn.execute(
        "UPDATE endpoint_replicas SET ready = false, updated_at = now() WHERE endpoint_id = $1 AND url = ANY($2) "
        "AND ready", endpoint_id, urls)
    return int(status.split()[-1])


async def track_replica_lifetimes(conn: asyncpg.Connection, endpoint_id: UUID, names: list[str]) -> None:
    """GPU time for the realized cost of serving: every recorded replica has an open lifetime holding the
    endpoint's per-replica GPUs (resources.gpu_count of resources.gpu_type); one no longer recorded, or whose GPUs
    changed, is closed now."""
    await conn.execute(
        """UPDATE replica_lifetimes l SET stopped_at = now()
           FROM endpoints e
           WHERE l.endpoint_id = $1 AND e.id = l.endpoint_id AND l.stopped_at IS NULL
             AND (NOT (l.replica = ANY($2::text[])) OR e.resources IS NULL
                  OR l.gpus IS DISTINCT FROM (e.resources->>'gpu_count')::integer
                  OR l.gpu_type IS DISTINCT FROM e.resources->>'gpu_type')""",
        endpoint_id, names)
    await conn.execute(
        """INSERT INTO replica_lifetimes (endpoint_id, replica, gpus, gpu_type, started_at)
           SELECT e.id, n.name, (e.resources->>'gpu_count')::integer, e.resources->>'gpu_type', now()
           FROM endpoints e, unnest($2::text[]) AS n(name)
           WHERE e.id = $1 AND e.resources->>'gpu_count' IS NOT NULL AND e.resources->>'gpu_type' IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM replica_lifetimes l WHERE l.endpoint_id = e.id AND l.replica = n.name
                             AND l.stopped_at IS NULL)
           ON CONFLICT DO NOTHING""",
        endpoint_id, names)


async def move_replica(conn: asyncpg.Connection, endpoint_id: UUID, old_url: str, new_url: str) -> int:
    """Point an endpoint's routes at its replica that came back on another address (only this endpoint's rows: the
    old port may already serve another release); returns how many rows followed."""
    status = await conn.execute(
        "UPDATE endpoint_replicas SET url = $3, updated_at = now() WHERE endpoint_id = $1 AND url = $2",
        endpoint_id, old_url, new_url)
    return int(status.split()[-1])


async def ensure_route(conn: asyncpg.Connection, route_name: str, project_id: UUID, endpoint_id: UUID) -> None:
    """A route named after the endpoint, sending it all traffic, unless the route already exists (traffic shifts own it)."""
    async with conn.transaction():
        created = await conn.fetchval(
            "INSERT INTO routes (name, project_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING name",
            route_name, project_id)
        if created:
            await conn.execute("INSERT INTO route_backends (route_name, endpoint_id, weight) VALUES ($1, $2, 100)",
                               route_name, endpoint_id)


async def remove_from_routing(conn: asyncpg.Connection, endpoint_id: UUID) -> None:
    """No replica of the endpoint is routed to (or counted ready), and routes left without backends go."""
    async with conn.transaction():
        await conn.execute("DELETE FROM endpoint_replicas WHERE endpoint_id = $1", endpoint_id)
        await track_replica_lifetimes(conn, endpoint_id, [])
        await conn.execute("UPDATE endpoints SET ready_replicas = 0 WHERE id = $1", endpoint_id)
        await conn.execute("DELETE FROM route_backends WHERE endpoint_id = $1", endpoint_id)
        await conn.execute("DELETE FROM routes r WHERE NOT EXISTS (SELECT 1 FROM route_backends b WHERE b.route_name = r.name) "
                           "AND NOT EXISTS (SELECT 1 FROM route_provider_backends p WHERE p.route_name = r.name)")
