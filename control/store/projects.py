"""Projects and their bearer tokens (stored as SHA-256 hashes; the plain token is shown once)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from uuid import UUID

import asyncpg

from control.store.rows import Row

TOKEN_PREFIX = "bud_"
_PROJECT_COLUMNS = "id, name, created_at"


class ProjectRow(Row):
    id: UUID
    name: str
    created_at: datetime


class Principal(Row):
    """Who is calling (the token's row): the token's project, and whether it may administer projects."""

    token_id: UUID
    project_id: UUID
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_project(conn: asyncpg.Connection, name: str) -> ProjectRow:
    return ProjectRow.of(await conn.fetchrow(f"INSERT INTO projects (name) VALUES ($1) RETURNING {_PROJECT_COLUMNS}",
                                             name))


async def get_project_by_name(conn: asyncpg.Connection, name: str) -> ProjectRow | None:
    return ProjectRow.one(await conn.fetchrow(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE name = $1", name))


async def list_projects(conn: asyncpg.Connection, only: UUID | None) -> list[ProjectRow]:
    if only is None:
        return ProjectRow.many(await conn.fetch(f"SELECT {_PROJECT_COLUMNS} FROM projects ORDER BY created_at"))
    return ProjectRow.many(await conn.fetch(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = $1", only))


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
    return Principal.one(await conn.fetchrow(
        "UPDATE api_tokens SET last_used_at = now() WHERE token_sha256 = $1 "
        "RETURNING id AS token_id, project_id, is_admin",
        hash_token(token),
    ))


async def admin_token_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE is_admin)"))
