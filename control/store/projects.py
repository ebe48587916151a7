"""Projects and their bearer tokens (stored as SHA-256 hashes; the plain token is shown once)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from control.store.rows import Row

TOKEN_PREFIX = "bud_"
_PROJECT_COLUMNS = "id, name, created_at"


class ProjectRow(Row):
    id: UUID
    name: str
    created_at: datetime


class TokenRole(StrEnum):
    """What a token may do: admin (every project, and projects themselves), member (read and change its own
    project), read-only (GET its own project's resources)."""

    ADMIN = "admin"
    MEMBER = "member"
    READ_ONLY = "read-only"


class Principal(Row):
    """Who is calling (the token's row): the token's project and role."""

    token_id: UUID
    project_id: UUID
    role: TokenRole

    @property
    def is_admin(self) -> bool:
        return self.role == TokenRole.ADMIN


class TokenRow(Row):
    """A token as its project sees it: never the token itself (only its hash is stored)."""

    id: UUID
    project_id: UUID
    name: str
    role: TokenRole
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


_TOKEN_COLUMNS = "id, project_id, name, role, created_at, last_used_at, expires_at, revoked_at"
# A request refreshes last_used_at at most this often, so a busy token does not write on every call.
LAST_USED_RESOLUTION = "30 seconds"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_project(conn: asyncpg.Connection, name: str) -> ProjectRow:
    return ProjectRow.of(await conn.fetchrow(f"INSERT INTO projects (name) VALUES ($1) RETURNING {_PROJECT_COLUMNS}",
                                             name))


async def get_project(conn: asyncpg.Connection, project_id: UUID) -> ProjectRow | None:
    return ProjectRow.one(await conn.fetchrow(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = $1", project_id))


async def get_project_by_name(conn: asyncpg.Connection, name: str) -> ProjectRow | None:
    return ProjectRow.one(await conn.fetchrow(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE name = $1", name))


async def list_projects(conn: asyncpg.Connection, only: UUID | None) -> list[ProjectRow]:
    if only is None:
        return ProjectRow.many(await conn.fetch(f"SELECT {_PROJECT_COLUMNS} FROM projects ORDER BY created_at"))
    return ProjectRow.many(await conn.fetch(f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE id = $1", only))


async def issue_token(conn: asyncpg.Connection, project_id: UUID, name: str, role: TokenRole = TokenRole.MEMBER,
                      expires_at: datetime | None = None) -> tuple[TokenRow, str]:
    """A new token's row and the token itself (returned to the caller once, stored only as its hash)."""
    token = new_token()
    row = TokenRow.of(await conn.fetchrow(
        f"INSERT INTO api_tokens (project_id, name, token_sha256, role, expires_at) VALUES ($1, $2, $3, $4, $5) "
        f"RETURNING {_TOKEN_COLUMNS}",
        project_id, name, hash_token(token), role.value, expires_at,
    ))
    return row, token


async def resolve_token(conn: asyncpg.Connection, token: str) -> Principal | None:
    """The caller behind a token that is neither revoked nor expired (None otherwise); refreshes last_used_at."""
    return Principal.one(await conn.fetchrow(
        f"""
        WITH live AS (
            SELECT id, project_id, role, last_used_at FROM api_tokens
            WHERE token_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        ), touched AS (
            UPDATE api_tokens SET last_used_at = now()
            WHERE id = (SELECT id FROM live)
              AND (last_used_at IS NULL OR last_used_at < now() - interval '{LAST_USED_RESOLUTION}')
        )
        SELECT id AS token_id, project_id, role FROM live
        """,
        hash_token(token),
    ))


async def list_tokens(conn: asyncpg.Connection, project_id: UUID) -> list[TokenRow]:
    return TokenRow.many(await conn.fetch(
        f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE project_id = $1 ORDER BY created_at", project_id))


async def revoke_token(conn: asyncpg.Connection, project_id: UUID, token_id: UUID) -> TokenRow | None:
    """Revoke (idempotent: an already revoked token keeps its first revocation time); None if not the project's."""
    return TokenRow.one(await conn.fetchrow(
        f"UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $2 AND project_id = $1 "
        f"RETURNING {_TOKEN_COLUMNS}",
        project_id, token_id,
    ))


async def admin_token_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin')"))
