"""Annotated dependencies: the settings, the pool and the Temporal client held by the app, and the caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.errors import ApiError, not_found
from control.errors import invalid_field
from core.settings import Settings
from control.store import projects
from control.store.projects import Principal

_bearer = HTTPBearer(auto_error=False, description="Project token (the first admin token is in .bud/admin-token)")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def _temporal(request: Request) -> Client:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(_pool)]
TemporalDep = Annotated[Client, Depends(_temporal)]


READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _principal(
    request: Request, pool: PoolDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    async with pool.acquire() as conn:
        principal = await projects.resolve_token(conn, credentials.credentials)
    if principal is None:
        raise ApiError(401, "invalid, revoked or expired token")
    if principal.role == projects.TokenRole.READ_ONLY and request.method not in READ_METHODS:
        raise ApiError(403, "this token is read-only: it may look, not change")
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "this operation needs an admin token")
    return principal


AdminDep = Annotated[Principal, Depends(_admin)]


def require_project_access(principal: Principal, project_id: UUID) -> None:
    """A project's own token may manage its tokens and keys; an admin may manage any project's. Others see
    nothing (404, not 403)."""
    if principal.project_id != project_id and not principal.is_admin:
        raise not_found("project", project_id)


def refuse_past_expiry(expires_at: datetime | None) -> None:
    """An expiry must lie in the future (a 422 naming expires_at)."""
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise invalid_field("expires_at", "must be in the future")
