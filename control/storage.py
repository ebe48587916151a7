"""Who owns which objects: each project has its own key space in the models bucket, `s3://models/<project>/...`,
and one registration's prefix never contains, or lies inside, another live registration's.

So a project can neither register (and so deploy) another project's weights, nor have its objects moved into
someone else's quarantine: a registration only ever lists, scans and moves the objects under its own prefix.
"""

from __future__ import annotations

import asyncpg

from control.errors import Conflict, invalid_field
from control.payloads.models import ModelRegistration
from control.store import models


def key_space(project_name: str) -> str:
    """The prefix under which a project's objects live (what `bud models upload` writes to)."""
    return f"{project_name}/"


def upload_prefix(project_name: str, name: str, version: str) -> str:
    """Where `PUT /api/models/uploads/<name>/<version>/...` writes one model version's files (no trailing slash).
    name and version are validated by the caller (no '/', no '..'), so the prefix stays inside the key space."""
    return f"{key_space(project_name)}{name}/{version}"


def require_own_key_space(body: ModelRegistration, project_name: str, bucket: str) -> None:
    where = f"s3://{bucket}/{key_space(project_name)}"
    if body.bucket != bucket or not body.prefix.startswith(key_space(project_name)):
        raise invalid_field("source_path", f"must be inside this project's key space: {where}<model>/...")


async def require_free_prefix(conn: asyncpg.Connection, body: ModelRegistration) -> None:
    """Conflict when a live registration (scanning or available) owns this prefix, a parent or a child of it.
    Call inside the transaction that inserts the model: the lock makes check-then-insert atomic."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"model-prefix:{body.bucket}")
    other = await models.overlapping_registration(conn, body.bucket, body.prefix)
    if other is not None:
        raise Conflict(f"s3://{other.bucket}/{other.prefix} already belongs to model {other.name} {other.version}; "
                       "a registration's prefix may not contain or lie inside another's", "source_path")
