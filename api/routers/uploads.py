"""Model files uploaded through the API, into the caller's own key space: clients hold a project token, never the
S3 credentials (only the platform's API and workers do).

`PUT /api/models/uploads/{name}/{version}/{path}` streams the request body into
`s3://<models bucket>/<project>/<name>/<version>/<path>`: the project comes from the token, so no request can name
another project's key space, and name, version and path are validated (no '..', no absolute or empty segments, no
control characters, at most 512 bytes and 16 levels deep). The body is never held whole: it goes to S3 in 16 MB
parts (a multipart upload; a smaller file is one PUT), so the object appears only once it is complete, replacing
an older one atomically; an upload cut short leaves nothing behind.

Bounds, each a 413 before or while the body streams: BUD_UPLOAD_MAX_FILE_BYTES per file, BUD_UPLOAD_MAX_BYTES for
all of one version's files together, and the registry's 1,000 files per model. The total is checked against what
the version already holds when each file starts; files uploaded in parallel may together overshoot it by at most
the files in flight.

A version whose prefix a live registration (SCANNING or AVAILABLE) owns, or contains, is not writable (409): its
objects are being scanned or were scanned and may be deployed. Upload to a new version instead; a FAILED or
QUARANTINED registration owns nothing any more.

An optional `X-Content-SHA256` header (hex) is checked against the streamed bytes before the object is completed
(422 on a mismatch, nothing written) and kept as the object's `sha256` metadata.

`GET /api/models/uploads/{name}/{version}` lists what the version holds (path, size, ETag) and the part size, so a
client skips files whose checksum already matches.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Header, Path, Request, status
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from api.deps import PoolDep, PrincipalDep, SettingsDep
from api.errors import ApiError
from control import storage
from control.errors import Conflict, invalid_field
from control.payloads.models import MODEL_NAME_PATTERN
from control.store import models, projects
from core.objectstore import ObjectStore, ObjectStoreUnavailable
from core.settings import Settings
from registry.model_objects import MAX_OBJECTS_PER_MODEL, format_limit, path_problem

router = APIRouter(prefix="/api/models/uploads", tags=["models"])

UPLOAD_PATH_PREFIX = "/api/models/uploads/"  # api/limits.py streams these PUT bodies instead of buffering them
PART_SIZE = 16 * 1024 * 1024
MAX_PATH_DEPTH = 16
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"  # as a registration's version

NameParam = Annotated[str, Path(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)]
VersionParam = Annotated[str, Path(min_length=1, max_length=64, pattern=VERSION_PATTERN)]


class UploadedFile(BaseModel):
    path: str
    size: int
    sha256: str
    source_path: str


class StoredFile(BaseModel):
    path: str
    size: int
    etag: str


class UploadListing(BaseModel):
    source_path: str
    part_size: int
    max_file_bytes: int
    max_bytes: int
    max_files: int
    files: list[StoredFile]


def upload_path_problem(path: str) -> str | None:
    """Why `path` cannot be an uploaded file's name; None when it can."""
    if not path:
        return "is empty: name the file, e.g. config.json"
    if problem := path_problem(path):
        return problem
    if path.count("/") >= MAX_PATH_DEPTH:
        return f"is deeper than {MAX_PATH_DEPTH} folders"
    return None


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    try:
        yield
    except (ObjectStoreUnavailable, ClientError, BotoCoreError, OSError) as error:
        raise ApiError(503, f"the object store is unavailable ({type(error).__name__}); retry shortly") from error


async def _prefix(pool, principal, settings: Settings, name: str, version: str) -> str:
    async with pool.acquire() as conn:
        project = await projects.get_project(conn, principal.project_id)
        if project is None:
            raise ApiError(401, "this token's project no longer exists")
        return storage.upload_prefix(project.name, name, version)


@router.get("/{name}/{version}", response_model=UploadListing)
async def list_upload(name: NameParam, version: VersionParam, pool: PoolDep, settings: SettingsDep,
                      principal: PrincipalDep) -> dict:
    """The files this project's version holds (at most 1,000), the part size uploads use (for ETags) and the
    limits, so a client refuses an upload that cannot fit before sending it."""
    prefix = await _prefix(pool, principal, settings, name, version)
    async with ObjectStore(settings) as store:
        with store_errors():
            found = await store.list_objects(settings.models_bucket, prefix + "/", max_keys=MAX_OBJECTS_PER_MODEL)
    files = [{"path": o.key[len(prefix) + 1:], "size": o.size, "etag": o.etag}
             for o in found if not o.key.endswith("/")]
    return {"source_path": f"s3://{settings.models_bucket}/{prefix}", "part_size": PART_SIZE,
            "max_file_bytes": settings.upload_max_file_bytes, "max_bytes": settings.upload_max_bytes,
            "max_files": MAX_OBJECTS_PER_MODEL, "files": files}


@router.put("/{name}/{version}/{path:path}", response_model=UploadedFile, status_code=status.HTTP_201_CREATED,
            openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def upload_file(
    name: NameParam,
    version: VersionParam,
    path: str,
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    content_sha256: Annotated[str | None, Header(
        alias="x-content-sha256", pattern=r"^[0-9a-fA-F]{64}$",
        description="SHA-256 of the body, checked before it is stored")] = None,
    # A transport header (clients and proxies set it), so not a documented parameter; checked early for a 413.
    content_length: Annotated[int | None, Header(alias="content-length", ge=0, include_in_schema=False)] = None,
) -> dict:
    """Store the body as one file of the model version (replacing it if present); 201 with its size and SHA-256."""
    if problem := upload_path_problem(path):
        raise invalid_field("path", problem)
    prefix = await _prefix(pool, principal, settings, name, version)
    bucket = settings.models_bucket
    async with pool.acquire() as conn:
        owner = await models.overlapping_registration(conn, bucket, prefix)
    if owner is not None:
        raise Conflict(f"s3://{bucket}/{prefix} belongs to the registration of {owner.name} {owner.version} "
                       "(scanning or available): its files cannot change; upload a new version", "version")
    key = f"{prefix}/{path}"
    async with ObjectStore(settings) as store:
        with store_errors():
            existing = await store.list_objects(bucket, prefix + "/", max_keys=MAX_OBJECTS_PER_MODEL + 1)
        others = [o for o in existing if o.key != key]
        if len(others) >= MAX_OBJECTS_PER_MODEL:
            raise ApiError(413, f"{name} {version} already holds {MAX_OBJECTS_PER_MODEL:,} files, the most a model "
                                "may have (was the right folder uploaded?)")
        room = settings.upload_max_bytes - sum(o.size for o in others)
        if settings.upload_max_file_bytes <= room:
            cap = settings.upload_max_file_bytes
            what = f"the {format_limit(settings.upload_max_file_bytes)} limit per file"
        else:
            cap, what = max(room, 0), (f"the {format_limit(settings.upload_max_bytes)} limit per model version "
                                       f"({format_limit(max(room, 0))} left)")
        if content_length is not None and content_length > cap:
            raise ApiError(413, f"{path} is {content_length:,} bytes, over {what}")
        with store_errors():
            size, digest = await _stream_into(store, bucket, key, request.stream(), cap,
                                              content_sha256.lower() if content_sha256 else None,
                                              f"{path} is larger than {what}")
    return {"path": path, "size": size, "sha256": digest, "source_path": f"s3://{bucket}/{prefix}"}


async def _stream_into(store: ObjectStore, bucket: str, key: str, chunks: AsyncIterator[bytes], cap: int,
                       expected_sha256: str | None, too_large: str) -> tuple[int, str]:
    """Copy the body into `key` in PART_SIZE parts (memory: one part); (size, sha256). Nothing is stored unless
    the whole body arrived, within `cap` and matching `expected_sha256`."""
    client = store.client
    sha, size, buffer = hashlib.sha256(), 0, bytearray()
    upload_id: str | None = None
    parts: list[dict] = []
    metadata = {"sha256": expected_sha256} if expected_sha256 else {}

    async def send_part(data: bytes) -> None:
        nonlocal upload_id
        if upload_id is None:
            upload_id = (await client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata))["UploadId"]
        reply = await client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1,
                                         Body=data)
        parts.append({"PartNumber": len(parts) + 1, "ETag": reply["ETag"]})

    try:
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, too_large)
                sha.update(chunk)
                buffer += chunk
                while len(buffer) >= PART_SIZE:
                    part = bytes(buffer[:PART_SIZE])
                    del buffer[:PART_SIZE]
                    await send_part(part)
        except ClientDisconnect:
            raise ApiError(400, "the upload was interrupted before the whole body arrived; "
                                "nothing was stored") from None
        digest = sha.hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise invalid_field("x-content-sha256", f"the body's SHA-256 is {digest}; nothing was stored")
        if upload_id is None:
            await client.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), Metadata={"sha256": digest})
        else:
            if buffer:
                await send_part(bytes(buffer))
            await client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                   MultipartUpload={"Parts": parts})
            upload_id = None
        return size, digest
    finally:
        if upload_id is not None:
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
