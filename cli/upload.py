"""Upload a model folder to the S3 store: multipart with parallel parts, streamed from disk, skipping unchanged files.

A file is skipped when the object already there has the same size and the same content checksum: the ETag (MD5 of
the whole object, or the multipart ETag recomputed locally with our part size) or a sha256 in the object's metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from core.settings import Settings

PART_SIZE = 16 * 1024 * 1024
HASH_BLOCK = 4 * 1024 * 1024
# Never upload these: caches and VCS folders that tools leave next to model files.
IGNORED_PARTS = {".git", "__pycache__", ".cache", ".ipynb_checkpoints"}


@dataclass
class LocalFile:
    path: Path
    relative: str
    size: int


@dataclass
class UploadOutcome:
    uploaded: list[str]
    skipped: list[str]
    bytes_uploaded: int


def s3_client(settings: Settings):
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key, region_name=settings.s3_region,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", max_pool_connections=16),
    )


def model_files(folder: Path) -> list[LocalFile]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not IGNORED_PARTS.intersection(relative.parts):
            files.append(LocalFile(path=path, relative=relative.as_posix(), size=path.stat().st_size))
    return files


def local_digests(path: Path, part_size: int = PART_SIZE) -> tuple[str, str, str]:
    """(md5, multipart ETag for part_size, sha256) in one streamed pass."""
    md5, sha, part_md5s = hashlib.md5(), hashlib.sha256(), []
    with open(path, "rb") as handle:
        part = hashlib.md5()
        in_part = 0
        while block := handle.read(HASH_BLOCK):
            md5.update(block)
            sha.update(block)
            view = memoryview(block)
            while view:
                take = min(len(view), part_size - in_part)
                part.update(view[:take])
                in_part += take
                view = view[take:]
                if in_part == part_size:
                    part_md5s.append(part.digest())
                    part, in_part = hashlib.md5(), 0
        if in_part or not part_md5s:
            part_md5s.append(part.digest())
    multipart = hashlib.md5(b"".join(part_md5s)).hexdigest() + f"-{len(part_md5s)}"
    return md5.hexdigest(), multipart, sha.hexdigest()


def already_uploaded(client, bucket: str, key: str, local: LocalFile, digests: tuple[str, str, str]) -> bool:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    if int(head["ContentLength"]) != local.size:
        return False
    md5, multipart, sha256 = digests
    if head.get("Metadata", {}).get("sha256") == sha256:
        return True
    etag = head.get("ETag", "").strip('"')
    return etag in (md5, multipart)


def upload_folder(
    settings: Settings,
    folder: Path,
    bucket: str,
    prefix: str,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_file: Callable[[str, str], None] = lambda name, outcome: None,
    concurrency: int = 8,
) -> UploadOutcome:
    client = s3_client(settings)
    transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                              max_concurrency=concurrency, use_threads=True)
    outcome = UploadOutcome(uploaded=[], skipped=[], bytes_uploaded=0)
    for local in model_files(folder):
        key = f"{prefix.rstrip('/')}/{local.relative}"
        digests = local_digests(local.path)
        if already_uploaded(client, bucket, key, local, digests):
            outcome.skipped.append(local.relative)
            on_bytes(local.size)
            on_file(local.relative, "unchanged, skipped")
            continue
        client.upload_file(str(local.path), bucket, key, Config=transfer, Callback=on_bytes,
                           ExtraArgs={"Metadata": {"sha256": digests[2]}})
        outcome.uploaded.append(local.relative)
        outcome.bytes_uploaded += local.size
        on_file(local.relative, "uploaded")
    return outcome
