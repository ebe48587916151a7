"""Model rows: the registration written by the API, the scan's outcome written by RegisterModel, benchmarks."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from control.payloads.models import BenchmarkCreate, ModelRegistration, ModelStatus, RecordScanInput
from control.store.rows import Row
from registry.license import LicenseCategory, normalize_license

MODEL_COLUMNS = """m.id, m.project_id, m.name, m.version, m.architecture, m.parameter_count, m.context_length,
    m.source_path, m.license, m.license_category, m.status, m.facts, m.real_parameter_count, m.scan_report,
    m.quarantine_prefix, m.error, m.workflow_id, m.created_at, m.updated_at,
    COALESCE(m.real_parameter_count, m.parameter_count) AS effective_parameter_count"""
_BENCHMARK_COLUMNS = "id, kind, name, score, unit, gpu_type, details, source, created_at"


class ModelRow(Row):
    id: UUID
    project_id: UUID
    name: str
    version: str
    architecture: str
    parameter_count: int  # as declared at registration
    context_length: int
    source_path: str
    license: str | None
    license_category: LicenseCategory | None
    status: ModelStatus
    facts: dict[str, Any] | None  # ModelArchitecture, once scanned
    real_parameter_count: int | None  # counted from the safetensors headers
    scan_report: dict[str, Any] | None
    quarantine_prefix: str | None
    error: str | None
    workflow_id: str | None
    created_at: datetime
    updated_at: datetime
    effective_parameter_count: int  # the counted parameters where known, else the declared ones


class ModelSearchRow(ModelRow):
    best_score: float | None = None  # the model's best score in the benchmark filtered on, when one was


class ModelFileRow(Row):
    path: str  # relative to the model's prefix
    size: int
    sha256: str | None


class BenchmarkRow(Row):
    id: UUID
    kind: Literal["quality", "performance"]
    name: str
    score: float
    unit: str | None
    gpu_type: str | None
    details: dict[str, Any]
    source: str | None
    created_at: datetime


async def insert_model(conn: asyncpg.Connection, project_id: UUID, body: ModelRegistration) -> ModelRow | None:
    """None when (project, name, version) exists already. A requested license is normalised at once (SPDX id and
    category) so browsing by license works before the scan ends; the scan may refine it from the files."""
    license_info = normalize_license(body.license) if body.license else None
    return ModelRow.one(await conn.fetchrow(
        f"""
        INSERT INTO models AS m (project_id, name, version, architecture, parameter_count, context_length,
                            source_path, bucket, prefix, license, license_category)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (project_id, name, version) DO NOTHING
        RETURNING {MODEL_COLUMNS}
        """,
        project_id, body.name, body.version, body.architecture.lower(), body.parameter_count, body.context_length,
        body.source_path, body.bucket, body.prefix,
        license_info.id if license_info else None, license_info.category if license_info else None,
    ))


async def set_workflow_id(conn: asyncpg.Connection, model_id: UUID, workflow_id: str) -> None:
    await conn.execute("UPDATE models SET workflow_id = $2 WHERE id = $1", model_id, workflow_id)


async def get_model(conn: asyncpg.Connection, model_id: UUID, project_id: UUID | None = None) -> ModelRow | None:
    if project_id is None:
        return ModelRow.one(await conn.fetchrow(f"SELECT {MODEL_COLUMNS} FROM models m WHERE m.id = $1", model_id))
    return ModelRow.one(await conn.fetchrow(
        f"SELECT {MODEL_COLUMNS} FROM models m WHERE m.id = $1 AND m.project_id = $2", model_id, project_id))


async def record_scan(conn: asyncpg.Connection, outcome: RecordScanInput) -> None:
    """Idempotent: the same outcome written twice leaves the same rows."""
    async with conn.transaction():
        await conn.execute(
            """
            UPDATE models SET status = $2, scan_report = $3, facts = $4, real_parameter_count = $5,
                license = COALESCE($6, license), license_category = COALESCE($7, license_category), quarantine_prefix = $8, error = $9,
                updated_at = now()
            WHERE id = $1
            """,
            outcome.model_id, outcome.status.value, outcome.report.model_dump(mode="json"),
            outcome.facts.model_dump(mode="json") if outcome.facts else None, outcome.real_parameter_count,
            *((outcome.license_id, outcome.license_category) if outcome.license_id not in (None, "unknown") else (None, None)),
            outcome.report.quarantine_prefix, outcome.error,
        )
        if outcome.checksums:
            await conn.executemany(
                """
                INSERT INTO model_files (model_id, path, size, sha256) VALUES ($1, $2, $3, $4)
                ON CONFLICT (model_id, path) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256
                """,
                [(outcome.model_id, c.path, c.size, c.sha256) for c in outcome.checksums],
            )


async def model_files(conn: asyncpg.Connection, model_id: UUID) -> list[ModelFileRow]:
    return ModelFileRow.many(
        await conn.fetch("SELECT path, size, sha256 FROM model_files WHERE model_id = $1 ORDER BY path", model_id))


async def add_benchmark(conn: asyncpg.Connection, model_id: UUID, body: BenchmarkCreate) -> BenchmarkRow:
    return BenchmarkRow.of(await conn.fetchrow(
        f"""
        INSERT INTO model_benchmarks (model_id, kind, name, score, unit, gpu_type, details, source)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING {_BENCHMARK_COLUMNS}
        """,
        model_id, body.kind, body.name, body.score, body.unit, body.gpu_type, body.details, body.source,
    ))


async def benchmarks(conn: asyncpg.Connection, model_ids: list[UUID]) -> dict[UUID, list[BenchmarkRow]]:
    """Each model's benchmarks, oldest first (an empty list for a model without any)."""
    rows = await conn.fetch(
        f"SELECT model_id, {_BENCHMARK_COLUMNS} FROM model_benchmarks WHERE model_id = ANY($1) ORDER BY created_at",
        model_ids,
    )
    grouped: dict[UUID, list[BenchmarkRow]] = {model_id: [] for model_id in model_ids}
    for row in rows:
        item = dict(row)
        grouped[item.pop("model_id")].append(BenchmarkRow.model_validate(item))
    return grouped


# ------------------------------------------------------------------------------------------------ browsing
SORT_KEYS = {
    "created_at": "m.created_at",
    "name": "m.name",
    "parameters": "COALESCE(m.real_parameter_count, m.parameter_count)",
    "score": "b.best_score",
}


def encode_cursor(value: Any, model_id: UUID) -> str:
    raw = json.dumps([value.isoformat() if hasattr(value, "isoformat") else value, str(model_id)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    value, model_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    UUID(model_id)
    return value, model_id


async def search_models(
    conn: asyncpg.Connection,
    project_id: UUID,
    *,
    architecture: str | None,
    min_parameters: int | None,
    max_parameters: int | None,
    license: str | None,
    status: str | None,
    benchmark: str | None,
    min_score: float | None,
    sort: str,
    limit: int,
    cursor: str | None,
) -> tuple[list[ModelSearchRow], str | None]:
    """Filter, sort and page (keyset pagination: stable under inserts, no OFFSET scans)."""
    descending = sort.startswith("-")
    key = sort.lstrip("-")
    sort_expr = SORT_KEYS[key]
    params: list[Any] = [project_id]

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    joins = ""
    where = ["m.project_id = $1"]
    if benchmark:
        joins = (f"JOIN (SELECT model_id, max(score) AS best_score FROM model_benchmarks WHERE name = {param(benchmark)} "
                 f"GROUP BY model_id) b ON b.model_id = m.id")
        if min_score is not None:
            where.append(f"b.best_score >= {param(min_score)}")
    if architecture:
        where.append(f"(lower(m.architecture) = {param(architecture.lower())} OR lower(m.facts->>'model_type') = ${len(params)})")
    if min_parameters is not None:
        where.append(f"COALESCE(m.real_parameter_count, m.parameter_count) >= {param(min_parameters)}")
    if max_parameters is not None:
        where.append(f"COALESCE(m.real_parameter_count, m.parameter_count) <= {param(max_parameters)}")
    if license:
        where.append(f"(lower(m.license) = {param(license.lower())} OR lower(m.license_category) = ${len(params)})")
    if status:
        where.append(f"m.status = {param(status)}")
    if cursor:
        value, last_id = decode_cursor(cursor)
        if key == "created_at":
            from datetime import datetime

            value = datetime.fromisoformat(value)
        comparison = "<" if descending else ">"
        where.append(f"({sort_expr}, m.id) {comparison} ({param(value)}, {param(UUID(last_id))})")
    order = "DESC" if descending else "ASC"
    query = (f"SELECT {MODEL_COLUMNS}{', b.best_score' if benchmark else ''} FROM models m {joins} "
             f"WHERE {' AND '.join(where)} ORDER BY {sort_expr} {order}, m.id {order} LIMIT {param(limit + 1)}")
    rows = ModelSearchRow.many(await conn.fetch(query, *params))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        last_value = {"created_at": last.created_at, "name": last.name,
                      "parameters": last.effective_parameter_count, "score": last.best_score}[key]
        next_cursor = encode_cursor(last_value, last.id)
    return rows, next_cursor


class PrefixOwnerRow(Row):
    """The live registration that owns a prefix of the models bucket."""

    id: UUID
    name: str
    version: str
    bucket: str
    prefix: str


async def overlapping_registration(conn: asyncpg.Connection, bucket: str, prefix: str) -> PrefixOwnerRow | None:
    """A SCANNING or AVAILABLE model whose prefix equals `prefix`, contains it or lies inside it (quarantined and
    failed registrations own nothing any more: their objects were moved away, or never scanned)."""
    return PrefixOwnerRow.one(await conn.fetchrow(
        """
        SELECT id, name, version, bucket, prefix FROM models
        WHERE bucket = $1 AND status IN ('SCANNING', 'AVAILABLE')
          AND (prefix = $2 OR starts_with(prefix, $2 || '/') OR starts_with($2, prefix || '/'))
        ORDER BY created_at LIMIT 1
        """,
        bucket, prefix,
    ))
