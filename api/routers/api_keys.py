"""Inference API keys of a project: what clients send to the gateway (`Authorization: Bearer bud-sk-...`).

The key is shown once when created; lists show its prefix. A project's own tokens manage its keys (read-only tokens
may list them), an admin token any project's; other projects see nothing (404).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from api.deps import PoolDep, PrincipalDep, refuse_past_expiry, require_project_access
from api.errors import not_found
from control.errors import invalid_field
from control.store import inference_keys, projects

router = APIRouter(prefix="/api/projects", tags=["api-keys"])

MAX_RATE = 1_000_000_000
RouteName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class InferenceKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    routes: list[RouteName] | None = Field(default=None, max_length=100, description=(
        "the model names (routes or endpoints of this project) the key may call; each must exist now. "
        "Omitted or null: every route of the project, present and future"))
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE, description="requests per minute; null: no limit")
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE,
                            description="prompt + completion tokens per minute; null: no limit")
    expires_at: AwareDatetime | None = Field(default=None, description="after this instant the gateway refuses it")


class InferenceKeyInfo(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    routes: list[str] | None
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None


class InferenceKeyOut(InferenceKeyInfo):
    key: str = Field(description="the inference key; shown once, stored only as a digest")



@router.post("/{project_id}/api-keys", response_model=InferenceKeyOut, status_code=status.HTTP_201_CREATED,
             responses={404: {"description": "no such project for this token"}})
async def create_api_key(project_id: UUID, body: InferenceKeyCreate, pool: PoolDep, principal: PrincipalDep) -> dict:
    """Create an inference key; the response holds the key, shown this once."""
    require_project_access(principal, project_id)
    refuse_past_expiry(body.expires_at)
    routes = list(dict.fromkeys(body.routes)) if body.routes is not None else None
    async with pool.acquire() as conn:
        if not await projects.list_projects(conn, only=project_id):
            raise not_found("project", project_id)
        if routes:
            unknown = await inference_keys.unknown_route_names(conn, project_id, routes)
            if unknown:
                raise invalid_field("routes", f"no route or endpoint named {unknown[0]!r} in this project")
        row, key = await inference_keys.create_key(conn, project_id, body.name, routes, body.rpm, body.tpm,
                                                   body.expires_at)
    return {**row.model_dump(), "key": key}


@router.get("/{project_id}/api-keys", response_model=list[InferenceKeyInfo])
async def list_api_keys(project_id: UUID, pool: PoolDep, principal: PrincipalDep) -> list[dict]:
    require_project_access(principal, project_id)
    async with pool.acquire() as conn:
        return [row.model_dump() for row in await inference_keys.list_keys(conn, project_id)]


@router.delete("/{project_id}/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={404: {"description": "no such key in this project"}})
async def revoke_api_key(project_id: UUID, key_id: UUID, pool: PoolDep, principal: PrincipalDep) -> Response:
    """Revoke a key (idempotent); the gateway refuses it within a second."""
    require_project_access(principal, project_id)
    async with pool.acquire() as conn:
        if await inference_keys.revoke_key(conn, project_id, key_id) is None:
            raise not_found("api key", key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
