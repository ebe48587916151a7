"""Put a folder's files straight into the S3 store with the platform's own credentials: for the tests and
benchmarks that play the operator (a prefix anywhere, a bucket of their choosing). Users upload through the API
(`bud models upload`, api/routers/uploads.py), which confines them to their project's key space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from core.settings import Settings

PART_SIZE = 16 * 1024 * 1024
IGNORED_PARTS = {".git", "__pycache__", ".cache", ".ipynb_checkpoints"}  # as `bud models upload` leaves out


@dataclass
class SeedOutcome:
    uploaded: list[str]
    bytes_uploaded: int


def s3_client(settings: Settings):
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key, region_name=settings.s3_region,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", max_pool_connections=16),
    )


def upload_folder(settings: Settings, folder: Path, bucket: str, prefix: str, concurrency: int = 8) -> SeedOutcome:
    """Every file of `folder` (but caches and VCS folders) to s3://bucket/prefix/<relative path>."""
    client = s3_client(settings)
    transfer = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                              max_concurrency=concurrency, use_threads=True)
    outcome = SeedOutcome(uploaded=[], bytes_uploaded=0)
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not path.is_file() or IGNORED_PARTS.intersection(relative.parts):
            continue
        client.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{relative.as_posix()}", Config=transfer)
        outcome.uploaded.append(relative.as_posix())
        outcome.bytes_uploaded += path.stat().st_size
    return outcome
