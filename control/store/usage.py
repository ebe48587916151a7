"""Reads behind GET /api/usage: the gateway's usage rows of one project, and its endpoints' GPU lifetimes."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from control.usage import Lifetime, UsageCell

# The SQL expression naming each row's group for a group_by (never built from input: looked up by a fixed key).
GROUP_EXPRESSIONS = {
    "project": "project_id::text",
    "key": "COALESCE(key_id::text, '')",
    "route": "route",
    "backend": "backend_kind || ':' || backend_id",
}


async def usage_cells(conn: asyncpg.Connection, project_id: UUID, group_by: str, window_from: datetime,
                      window_to: datetime, step_s: int | None) -> list[UsageCell]:
    """Requests, errors (status >= 400) and tokens per group, bucket and backend in [from, to)."""
    group = GROUP_EXPRESSIONS[group_by]
    bucket = "0" if step_s is None else "floor(extract(epoch FROM (at - $2)) / $4)::integer"
    step_args = () if step_s is None else (step_s,)
    rows = await conn.fetch(
        f"""SELECT {group} AS grp, {bucket} AS bucket, backend_kind, backend_id, count(*) AS requests,
                   count(*) FILTER (WHERE status >= 400) AS errors,
                   COALESCE(sum(prompt_tokens), 0) AS prompt_tokens,
                   COALESCE(sum(completion_tokens), 0) AS completion_tokens
            FROM usage_events WHERE project_id = $1 AND at >= $2 AND at < $3
            GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""",
        project_id, window_from, window_to, *step_args)
    return [UsageCell(group=row["grp"], bucket=row["bucket"], backend_kind=row["backend_kind"],
                      backend_id=row["backend_id"], requests=row["requests"], errors=row["errors"],
                      prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
            for row in rows]


async def lifetimes(conn: asyncpg.Connection, project_id: UUID, window_from: datetime,
                    window_to: datetime) -> list[Lifetime]:
    """The project's endpoints' replica lifetimes overlapping the window, with the cluster's price override for
    the GPU type (a cluster GPU pool's price_per_hour) where it has one."""
    rows = await conn.fetch(
        """SELECT l.endpoint_id, l.gpus, l.gpu_type, l.started_at, l.stopped_at,
                  (SELECT (pool->>'price_per_hour')::double precision
                   FROM jsonb_array_elements(c.gpus) pool
                   WHERE pool->>'gpu_type' = l.gpu_type AND pool->>'price_per_hour' IS NOT NULL LIMIT 1) AS price
           FROM replica_lifetimes l
           JOIN endpoints e ON e.id = l.endpoint_id
           LEFT JOIN clusters c ON c.id = e.cluster_id
           WHERE e.project_id = $1 AND l.started_at < $3 AND (l.stopped_at IS NULL OR l.stopped_at > $2)""",
        project_id, window_from, window_to)
    return [Lifetime(endpoint_id=row["endpoint_id"], gpus=row["gpus"], gpu_type=row["gpu_type"],
                     started_at=row["started_at"], stopped_at=row["stopped_at"], price_per_hour=row["price"])
            for row in rows]


async def provider_prices(conn: asyncpg.Connection, project_id: UUID) -> dict[str, tuple[float, float]]:
    """backend_id ("<provider_id>/<model>") -> (input, output) USD per Mtok, for every model of the project's
    providers."""
    rows = await conn.fetch("SELECT id, models, price_input_per_mtok, price_output_per_mtok FROM providers "
                            "WHERE project_id = $1", project_id)
    return {f"{row['id']}/{model}": (row["price_input_per_mtok"], row["price_output_per_mtok"])
            for row in rows for model in row["models"]}


async def names(conn: asyncpg.Connection, project_id: UUID) -> dict[str, str]:
    """Readable names for group values: keys, endpoint and provider backends, the project."""
    labels: dict[str, str] = {}
    for row in await conn.fetch("SELECT id::text AS id, name FROM inference_keys WHERE project_id = $1", project_id):
        labels[row["id"]] = row["name"]
    for row in await conn.fetch("SELECT id::text AS id, name FROM endpoints WHERE project_id = $1", project_id):
        labels[f"endpoint:{row['id']}"] = row["name"]
    for row in await conn.fetch("SELECT id::text AS id, name, models FROM providers WHERE project_id = $1",
                                project_id):
        for model in row["models"]:
            labels[f"provider:{row['id']}/{model}"] = f"{row['name']}/{model}"
    project = await conn.fetchrow("SELECT id::text AS id, name FROM projects WHERE id = $1", project_id)
    if project:
        labels[project["id"]] = project["name"]
    return labels
