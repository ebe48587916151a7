"""Measurements: what serving configs measured under workloads (benchmark runs, production windows, imports), each
in the caller's project.

`POST /api/measurements` imports a JSON list of measurements or a CSV (`Content-Type: text/csv`) shaped like
aiconfigurator's silicon_sample.csv (backend, system, isl, osl, batch_size, tp_size, pp_size, silicon_ttft_ms,
silicon_tpot_ms, ...; only `mode=agg` rows) or with this API's field names as columns. At most 10,000 rows and
8 MiB a request; all rows or none: a bad row is a 422 whose details name each bad row and column.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request, status
from starlette.requests import ClientDisconnect

from api.deps import PoolDep, PrincipalDep
from api.errors import ApiError
from control.errors import invalid_field
from control.measurements import BadRows, parse_csv, parse_json
from control.payloads.measurements import (
    MAX_IMPORT_BYTES,
    ImportResult,
    MeasurementCreate,
    MeasurementPage,
)
from control.store import measurements
from core.gpu_types import GPU_TYPE_NAMES, canonical_gpu_type

router = APIRouter(prefix="/api/measurements", tags=["measurements"])
PATH = "/api/measurements"

_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "minItems": 1, "maxItems": 10_000,
                                            "items": MeasurementCreate.model_json_schema(
                                                ref_template="#/components/schemas/{model}")}},
            "text/csv": {"schema": {"type": "string", "maxLength": MAX_IMPORT_BYTES}},
        },
    },
}


@router.get("", response_model=MeasurementPage)
async def list_measurements(
    pool: PoolDep,
    principal: PrincipalDep,
    model_id: UUID | None = None,
    gpu_type: Annotated[str | None, Query(max_length=64, json_schema_extra={"enum": list(GPU_TYPE_NAMES)},
                                          description="a GPU type or one of its aliases")] = None,
    runtime: Annotated[str | None, Query(max_length=32)] = None,
    source_id: Annotated[str | None, Query(max_length=200, description="e.g. a benchmark run id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict:
    """The project's measurements, oldest first; `next_cursor` pages on."""
    if gpu_type is not None:
        try:
            gpu_type = canonical_gpu_type(gpu_type)
        except ValueError as error:
            raise invalid_field("gpu_type", str(error)) from None
    if runtime is not None:
        runtime = {"trtllm": "tensorrt-llm"}.get(runtime.strip().lower(), runtime.strip().lower())
    async with pool.acquire() as conn:
        try:
            rows, next_cursor = await measurements.list_measurements(
                conn, principal.project_id, model_id=model_id, gpu_type=gpu_type, runtime=runtime,
                source_id=source_id, limit=limit, cursor=cursor)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise invalid_field("cursor", "is not a cursor this API returned") from None
    return {"items": [row.out() for row in rows], "next_cursor": next_cursor}


async def _read_body(request: Request) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                raise ApiError(413, f"request body larger than {MAX_IMPORT_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(413, f"request body larger than {MAX_IMPORT_BYTES} bytes") from None
    return b"".join(chunks)


@router.post("", response_model=ImportResult, status_code=status.HTTP_201_CREATED, openapi_extra=_IMPORT_BODY,
             responses={413: {"description": "body over 8 MiB"}, 415: {"description": "neither JSON nor CSV"}})
async def import_measurements(request: Request, pool: PoolDep, principal: PrincipalDep) -> dict:
    """Import measurements (JSON list or CSV), all or nothing."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", "text/csv"):
        raise ApiError(415, f"send application/json or text/csv, not {content_type[:60]!r}")
    body = await _read_body(request)
    try:
        items = parse_csv(body) if content_type == "text/csv" else parse_json(body)
    except BadRows as error:
        raise ApiError(422, error.message, error.rows) from None
    async with pool.acquire() as conn:
        wanted = {item.model_id for item in items if item.model_id is not None}
        owned = await measurements.models_of_project(conn, principal.project_id, wanted)
        unknown = [{"field": f"[{index}].model_id", "message": f"no model {item.model_id} in this project"}
                   for index, item in enumerate(items) if item.model_id is not None and item.model_id not in owned]
        if unknown:
            raise ApiError(422, f"{len(unknown)} row(s) name a model this project does not have, nothing imported",
                           unknown[:50])
        ids = await measurements.insert_measurements(conn, principal.project_id, items)
    return {"imported": len(ids), "ids": ids}
