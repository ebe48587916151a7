"""Projects and their bearer tokens (stored as SHA-256 hashes; the plain token is shown once)."""

from __future__ import annotations

import hashlib
import secrets
from uuid import UUID

import asyncpg
from pydantic import BaseModel

TOKEN_PREFIX = "bud_"


class Principal(BaseModel):
    """Who is calling: the token's project, and whether it may administer projects."""

    token_id: UUID
    project_id: UUID
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_project(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    return await conn.fetchrow("INSERT INTO projects (name) VALUES ($1) RETURNING id, name, created_at", name)


async def get_project_by_name(conn: asyncpg.Connection, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, name, created_at FROM projects WHERE name = $1", name)


async def list_projects(conn: asyncpg.Connection, only: UUID | None) -> list[asyncpg.Record]:
    if only is None:
        return await conn.fetch("SELECT id, name, created_at FROM projects ORDER BY created_at")
    return await conn.fetch("SELECT id, name, created_at FROM projects WHERE id = $1", only)


async def issue_token(conn: asyncpg.Connection, project_id: UUID, name: str, is_admin: bool = False) -> str:
    token = new_token()
    await conn.execute(
        "INSERT INTO api_tokens (project_id, name, token_sha256, is_admin) VALUES ($1, $2, $3, $4)",
        project_id,
        name,
        hash_token(token),
        is_admin,
    )
    return token


async def resolve_token(conn: asyncpg.Connection, token: str) -> Principal | None:
    row = await conn.fetchrow(
        "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 RETURNING id, project_id, is_admin",
        hash_token(token),
    )
    if row is None:
        return None
    return Principal(token_id=row["id"], project_id=row["project_id"], is_admin=row["is_admin"])


async def admin_token_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE is_admin)"))
