"""Inference API keys (what clients send to the gateway) and each project's monthly token quota.

Only a key's SHA-256 digest is stored (core.inference_keys); every write bumps updated_at, which the gateway polls
to reload its key set, so a revocation or a quota change reaches it within a second.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from core import inference_keys
from control.store.rows import Row


class InferenceKeyRow(Row):
    """A key as its project sees it: the prefix that names it, never the key or its digest."""

    id: UUID
    project_id: UUID
    name: str
    prefix: str
    routes: list[str] | None
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None


class ProjectQuotaRow(Row):
    id: UUID
    name: str
    monthly_token_quota: int | None
    updated_at: datetime


_COLUMNS = ("id, project_id, name, prefix, routes, rpm, tpm, expires_at, revoked_at, created_at, updated_at, "
            "last_used_at")


async def create_key(conn: asyncpg.Connection, project_id: UUID, name: str, routes: list[str] | None = None,
                     rpm: int | None = None, tpm: int | None = None,
                     expires_at: datetime | None = None) -> tuple[InferenceKeyRow, str]:
    """A new key's row and the key itself (returned to the caller once, stored only as its digest)."""
    plaintext, prefix, digest = inference_keys.generate()
    row = InferenceKeyRow.of(await conn.fetchrow(
        f"INSERT INTO inference_keys (project_id, name, prefix, digest, routes, rpm, tpm, expires_at) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
        project_id, name, prefix, digest, routes, rpm, tpm, expires_at))
    return row, plaintext


async def list_keys(conn: asyncpg.Connection, project_id: UUID) -> list[InferenceKeyRow]:
    return InferenceKeyRow.many(await conn.fetch(
        f"SELECT {_COLUMNS} FROM inference_keys WHERE project_id = $1 ORDER BY created_at, id", project_id))


async def get_key(conn: asyncpg.Connection, project_id: UUID, key_id: UUID) -> InferenceKeyRow | None:
    return InferenceKeyRow.one(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM inference_keys WHERE id = $2 AND project_id = $1", project_id, key_id))


async def revoke_key(conn: asyncpg.Connection, project_id: UUID, key_id: UUID) -> InferenceKeyRow | None:
    """Revoke (idempotent: a revoked key keeps its first revocation time); None if not the project's key."""
    return InferenceKeyRow.one(await conn.fetchrow(
        f"UPDATE inference_keys SET revoked_at = COALESCE(revoked_at, now()), "
        f"updated_at = CASE WHEN revoked_at IS NULL THEN now() ELSE updated_at END "
        f"WHERE id = $2 AND project_id = $1 RETURNING {_COLUMNS}",
        project_id, key_id))


async def live_key_by_digest(conn: asyncpg.Connection, digest: str) -> InferenceKeyRow | None:
    """The key with this digest if it is neither revoked nor expired."""
    return InferenceKeyRow.one(await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM inference_keys WHERE digest = $1 AND revoked_at IS NULL "
        f"AND (expires_at IS NULL OR expires_at > now())", digest))


async def set_monthly_quota(conn: asyncpg.Connection, project_id: UUID, quota: int | None) -> ProjectQuotaRow | None:
    """Set (or clear, with None) a project's monthly token quota; bumps the project's updated_at."""
    return ProjectQuotaRow.one(await conn.fetchrow(
        "UPDATE projects SET monthly_token_quota = $2, updated_at = now() WHERE id = $1 "
        "RETURNING id, name, monthly_token_quota, updated_at", project_id, quota))


async def get_quota(conn: asyncpg.Connection, project_id: UUID) -> ProjectQuotaRow | None:
    return ProjectQuotaRow.one(await conn.fetchrow(
        "SELECT id, name, monthly_token_quota, updated_at FROM projects WHERE id = $1", project_id))


async def unknown_route_names(conn: asyncpg.Connection, project_id: UUID, names: list[str]) -> list[str]:
    """Those of `names` that are neither a route nor a live endpoint of the project, in the order given."""
    known = {row["name"] for row in await conn.fetch(
        "SELECT name FROM routes WHERE project_id = $1 AND name = ANY($2::text[]) UNION "
        "SELECT name FROM endpoints WHERE project_id = $1 AND name = ANY($2::text[]) AND status <> 'DELETED'",
        project_id, names)}
    return [name for name in names if name not in known]
