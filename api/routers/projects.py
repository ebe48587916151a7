"""Projects and their tokens. Any token sees its own project; admin tokens create projects and mint tokens for any
project; a member token mints member or read-only tokens for its own project; tokens can expire and be revoked."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.deps import AdminDep, PoolDep, PrincipalDep, refuse_past_expiry, require_project_access
from api.errors import not_found
from control.errors import Conflict, invalid_field
from control.payloads.common import NAME_PATTERN, RequestBody
from control.store import inference_keys, projects
from control.store.projects import TokenRole

router = APIRouter(prefix="/api/projects", tags=["projects"])


class ProjectCreate(RequestBody):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)


class TokenCreate(RequestBody):
    name: str = Field(min_length=1, max_length=100)
    role: TokenRole = Field(default=TokenRole.MEMBER,
                            description="admin (only an admin token may mint one), member or read-only")
    expires_at: AwareDatetime | None = Field(
        default=None, description="after this instant the token is refused; must be in the future (with a UTC offset)")


class ProjectUpdate(RequestBody):
    """Body of `PATCH /api/projects/{id}` (admins only): the project's monthly token quota."""

    model_config = ConfigDict(extra="forbid")

    monthly_token_quota: int | None = Field(ge=1, le=10**15, description=(
        "prompt + completion tokens the project's inference keys may use per calendar month (UTC) at the gateway; "
        "null: no quota"))


class ProjectQuotaOut(BaseModel):
    id: UUID
    name: str
    monthly_token_quota: int | None
    updated_at: datetime


class ProjectOut(BaseModel):
    id: UUID
    name: str
    created_at: datetime


class ProjectWithToken(ProjectOut):
    token: str = Field(description="bearer token for the new project; shown once, stored only as a hash")


class TokenInfo(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    role: TokenRole
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenOut(TokenInfo):
    token: str = Field(description="the bearer token; shown once, stored only as a hash")


@router.get("", response_model=list[ProjectOut])
async def list_projects(pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await projects.list_projects(conn, only=principal.project_id)
    return [row.model_dump() for row in rows]


@router.post("", response_model=ProjectWithToken, status_code=status.HTTP_201_CREATED)
async def create_project(body: ProjectCreate, pool: PoolDep, _: AdminDep) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        try:
            row = await projects.create_project(conn, body.name)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"project {body.name!r} already exists", "name") from None
        _, token = await projects.issue_token(conn, row.id, f"{body.name}-default")
    return {**row.model_dump(), "token": token}


@router.patch("/{project_id}", response_model=ProjectQuotaOut, responses={404: {"description": "no such project"}})
async def update_project(project_id: UUID, body: ProjectUpdate, pool: PoolDep, _: AdminDep) -> dict:
    """Set or clear the project's monthly token quota; the gateway applies it within a second."""
    async with pool.acquire() as conn:
        row = await inference_keys.set_monthly_quota(conn, project_id, body.monthly_token_quota)
    if row is None:
        raise not_found("project", project_id)
    return row.model_dump()


@router.get("/{project_id}/quota", response_model=ProjectQuotaOut, responses={404: {"description": "no such project"}})
async def get_project_quota(project_id: UUID, pool: PoolDep, principal: PrincipalDep) -> dict:
    require_project_access(principal, project_id)
    async with pool.acquire() as conn:
        row = await inference_keys.get_quota(conn, project_id)
    if row is None:
        raise not_found("project", project_id)
    return row.model_dump()



@router.post("/{project_id}/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED,
             responses={404: {"description": "no such project for this token"}})
async def create_token(project_id: UUID, body: TokenCreate, pool: PoolDep, principal: PrincipalDep) -> dict:
    require_project_access(principal, project_id)
    if body.role == TokenRole.ADMIN and not principal.is_admin:
        raise invalid_field("role", "only an admin token may mint admin tokens")
    refuse_past_expiry(body.expires_at)
    async with pool.acquire() as conn:
        if not await projects.list_projects(conn, only=project_id):
            raise not_found("project", project_id)
        row, token = await projects.issue_token(conn, project_id, body.name, body.role, body.expires_at)
    return {**row.model_dump(), "token": token}


@router.get("/{project_id}/tokens", response_model=list[TokenInfo])
async def list_tokens(project_id: UUID, pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    require_project_access(principal, project_id)
    async with pool.acquire() as conn:
        return [row.model_dump() for row in await projects.list_tokens(conn, project_id)]


@router.delete("/{project_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "no such token in this project"}})
async def revoke_token(project_id: UUID, token_id: UUID, pool: PoolDep, principal: PrincipalDep) -> Response:
    """Revoke a token (idempotent); the next request with it gets 401."""
    require_project_access(principal, project_id)
    async with pool.acquire() as conn:
        if await projects.revoke_token(conn, project_id, token_id) is None:
            raise not_found("token", token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
