"""Projects and their tokens. Any token sees its own project; admin tokens create projects and mint tokens."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import AdminDep, PoolDep, PrincipalDep
from api.errors import not_found
from control.errors import Conflict
from control.payloads.common import NAME_PATTERN
from control.store import projects

router = APIRouter(prefix="/api/projects", tags=["projects"])


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class ProjectOut(BaseModel):
    id: UUID
    name: str
    created_at: datetime


class ProjectWithToken(ProjectOut):
    token: str = Field(description="bearer token for the new project; shown once, stored only as a hash")


class TokenOut(BaseModel):
    project_id: UUID
    name: str
    token: str


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
        token = await projects.issue_token(conn, row.id, f"{body.name}-default")
    return {**row.model_dump(), "token": token}


@router.post("/{project_id}/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED)
async def create_token(project_id: UUID, body: TokenCreate, pool: PoolDep, principal: PrincipalDep) -> dict:
    # A project's own token may mint more tokens for it; an admin may mint for any project.
    if principal.project_id != project_id and not principal.is_admin:
        raise not_found("project", project_id)
    async with pool.acquire() as conn:
        if not await projects.list_projects(conn, only=project_id):
            raise not_found("project", project_id)
        token = await projects.issue_token(conn, project_id, body.name)
    return {"project_id": project_id, "name": body.name, "token": token}
