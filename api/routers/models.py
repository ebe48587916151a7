"""The model registry: register (starts the scan), browse with filters and a cursor, attach benchmarks."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, status
from pydantic import BaseModel

from api.deps import PoolDep, PrincipalDep, SettingsDep, TemporalDep
from api.errors import not_found
from control import storage
from control.errors import Conflict, invalid_field
from control.payloads.models import BenchmarkCreate, ModelRegistration, ModelStatus, RegisterModelInput
from control.store import models, projects
from workflows.ids import register_model_workflow_id
from workflows.starters import register_model_progress, start_register_model

router = APIRouter(prefix="/api/models", tags=["models"])
MAX_PARAMETER_COUNT = 2**63 - 1  # PostgreSQL's bigint: a larger bound is a 422, not an overflow in the query


class ModelAccepted(BaseModel):
    id: UUID
    status: str
    workflow_id: str


class ModelSummary(BaseModel):
    id: UUID
    name: str
    version: str
    architecture: str
    parameter_count: int
    effective_parameter_count: int
    context_length: int
    license: str | None
    license_category: str | None
    status: str
    source_path: str
    created_at: datetime
    benchmarks: list[dict[str, Any]] = []


class ModelDetail(ModelSummary):
    project_id: UUID
    facts: dict[str, Any] | None
    real_parameter_count: int | None
    scan_report: dict[str, Any] | None
    quarantine_prefix: str | None
    error: str | None
    workflow_id: str | None
    updated_at: datetime
    files: list[dict[str, Any]] = []
    progress: dict[str, Any] | None = None


class ModelPage(BaseModel):
    items: list[ModelSummary]
    next_cursor: str | None


@router.post("", response_model=ModelAccepted, status_code=status.HTTP_202_ACCEPTED)
async def register_model(
    body: ModelRegistration, pool: PoolDep, temporal: TemporalDep, settings: SettingsDep, principal: PrincipalDep
) -> dict:
    async with pool.acquire() as conn, conn.transaction():
        project = await projects.get_project(conn, principal.project_id)
        storage.require_own_key_space(body, project.name, settings.models_bucket)
        await storage.require_free_prefix(conn, body)
        row = await models.insert_model(conn, principal.project_id, body)
        if row is None:
            raise Conflict(f"model {body.name!r} version {body.version!r} is already registered",
                           fields=["name", "version"])
        workflow_id = register_model_workflow_id(row.id)
        await models.set_workflow_id(conn, row.id, workflow_id)
    await start_register_model(temporal, settings, RegisterModelInput(
        model_id=row.id, bucket=body.bucket, prefix=body.prefix, declared_parameter_count=body.parameter_count,
        declared_context_length=body.context_length, requested_license=body.license,
    ))
    return {"id": row.id, "status": row.status, "workflow_id": workflow_id}


@router.get("", response_model=ModelPage)
async def list_models(
    pool: PoolDep,
    principal: PrincipalDep,
    architecture: str | None = None,
    min_parameters: Annotated[int | None, Query(ge=0, le=MAX_PARAMETER_COUNT,
                                                description="at most max_parameters")] = None,
    max_parameters: Annotated[int | None, Query(ge=0, le=MAX_PARAMETER_COUNT)] = None,
    license: Annotated[str | None, Query(description="license id (apache-2.0) or category (permissive)")] = None,
    status_filter: Annotated[ModelStatus | None, Query(alias="status")] = None,
    benchmark: Annotated[str | None, Query(description="only models with this benchmark, e.g. mmlu")] = None,
    min_score: Annotated[float | None, Query(allow_inf_nan=False, description="needs benchmark")] = None,
    sort: Annotated[str, Query(pattern=r"^-?(created_at|name|parameters|score)$",
                               description="created_at, name, parameters or score (needs benchmark); '-' for descending")] = "created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> dict:
    if min_score is not None and not benchmark:
        raise invalid_field("min_score", "needs benchmark, e.g. benchmark=mmlu&min_score=60")
    if sort.lstrip("-") == "score" and not benchmark:
        raise invalid_field("sort", "sorting by score needs benchmark=NAME")
    if min_parameters is not None and max_parameters is not None and min_parameters > max_parameters:
        raise invalid_field("min_parameters", "is larger than max_parameters")
    async with pool.acquire() as conn:
        try:
            rows, next_cursor = await models.search_models(
                conn, principal.project_id, architecture=architecture, min_parameters=min_parameters,
                max_parameters=max_parameters, license=license, status=status_filter.value if status_filter else None,
                benchmark=benchmark, min_score=min_score, sort=sort, limit=limit, cursor=cursor,
            )
        except (ValueError, TypeError):
            raise invalid_field("cursor", "is not a cursor this API returned") from None
        scores = await models.benchmarks(conn, [row.id for row in rows])
    return {"items": [{**row.model_dump(), "benchmarks": [b.model_dump() for b in scores[row.id]]} for row in rows],
            "next_cursor": next_cursor}


@router.get("/{model_id}", response_model=ModelDetail)
async def get_model(model_id: UUID, pool: PoolDep, temporal: TemporalDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        row = await models.get_model(conn, model_id, principal.project_id)
        if row is None:
            raise not_found("model", model_id)
        files = [f.model_dump() for f in await models.model_files(conn, model_id)]
        scores = await models.benchmarks(conn, [model_id])
    progress = None
    if row.status == ModelStatus.SCANNING and row.workflow_id:
        progress = await register_model_progress(temporal, row.workflow_id)
    return {**row.model_dump(), "files": files, "benchmarks": [b.model_dump() for b in scores[model_id]],
            "progress": progress}


@router.post("/{model_id}/benchmarks", status_code=status.HTTP_201_CREATED)
async def add_benchmark(model_id: UUID, body: BenchmarkCreate, pool: PoolDep, principal: PrincipalDep) -> dict:
    async with pool.acquire() as conn:
        if await models.get_model(conn, model_id, principal.project_id) is None:
            raise not_found("model", model_id)
        return dict(await models.add_benchmark(conn, model_id, body))
