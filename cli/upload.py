"""Upload a model folder through the API with the project's token: each file streamed from disk in one request,
several files at once, unchanged files skipped. The CLI never holds S3 credentials: the platform writes the files
into this project's key space (api/routers/uploads.py).

A file is skipped when the version already holds an object of the same size and the same content checksum: its
ETag is the MD5 of the whole object, or the multipart ETag recomputed locally with the API's part size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from cli.api_client import error_message

HASH_BLOCK = 4 * 1024 * 1024
SEND_BLOCK = 1024 * 1024
# Never upload these: caches and VCS folders that tools leave next to model files.
IGNORED_PARTS = {".git", "__pycache__", ".cache", ".ipynb_checkpoints"}


class UploadError(RuntimeError):
    """The API refused a listing or a file; the message says why."""


@dataclass
class LocalFile:
    path: Path
    relative: str
    size: int


@dataclass
class UploadOutcome:
    source_path: str
    uploaded: list[str]
    skipped: list[str]
    bytes_uploaded: int


def model_files(folder: Path) -> list[LocalFile]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not IGNORED_PARTS.intersection(relative.parts):
            files.append(LocalFile(path=path, relative=relative.as_posix(), size=path.stat().st_size))
    return files


def local_digests(path: Path, part_size: int) -> tuple[str, str, str]:
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


def upload_url(name: str, version: str, relative: str | None = None) -> str:
    base = f"/api/models/uploads/{quote(name, safe='')}/{quote(version, safe='')}"
    return base if relative is None else f"{base}/{quote(relative, safe='/')}"


def _file_body(path: Path, on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(SEND_BLOCK):
            yield block
            on_bytes(len(block))


def refuse_what_cannot_fit(local_files: list[LocalFile], stored: dict[str, dict], listing: dict) -> None:
    """UploadError, before a byte is sent, when a file or the whole version would break the API's limits (which it
    would refuse with 413 once the body is on its way)."""
    if large := [f for f in local_files if f.size > listing["max_file_bytes"]]:
        raise UploadError(f"{large[0].relative} is {large[0].size:,} bytes, over the "
                          f"{listing['max_file_bytes']:,}-byte limit per file: shard the weights into smaller files")
    names = {f.relative for f in local_files}
    total = sum(f.size for f in local_files) + sum(s["size"] for path, s in stored.items() if path not in names)
    if total > listing["max_bytes"]:
        raise UploadError(f"the version would hold {total:,} bytes, over the {listing['max_bytes']:,}-byte limit "
                          "per model version")
    if len(names | set(stored)) > listing["max_files"]:
        raise UploadError(f"the version would hold more than {listing['max_files']:,} files, the most a model may "
                          "have (is this the right folder?)")


def upload_folder(
    client: httpx.Client,
    folder: Path,
    name: str,
    version: str,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_file: Callable[[str, str], None] = lambda name, outcome: None,
    concurrency: int = 4,
) -> UploadOutcome:
    """Upload FOLDER's files as model `name` `version` of the client's project; UploadError when the API refuses."""
    listing = client.get(upload_url(name, version))
    if listing.status_code != 200:
        raise UploadError(error_message(listing))
    body = listing.json()
    part_size = int(body["part_size"])
    stored = {item["path"]: item for item in body["files"]}
    outcome = UploadOutcome(source_path=body["source_path"], uploaded=[], skipped=[], bytes_uploaded=0)
    local_files = model_files(folder)
    refuse_what_cannot_fit(local_files, stored, body)

    def one(local: LocalFile) -> None:
        md5, multipart, sha256 = local_digests(local.path, part_size)
        there = stored.get(local.relative)
        if there is not None and there["size"] == local.size and there["etag"].strip('"') in (md5, multipart):
            outcome.skipped.append(local.relative)
            on_bytes(local.size)
            on_file(local.relative, "unchanged, skipped")
            return
        response = client.put(upload_url(name, version, local.relative), content=_file_body(local.path, on_bytes),
                              headers={"Content-Length": str(local.size), "Content-Type": "application/octet-stream",
                                       "X-Content-SHA256": sha256})
        if response.status_code != 201:
            raise UploadError(f"{local.relative}: {error_message(response)}")
        outcome.uploaded.append(local.relative)
        outcome.bytes_uploaded += local.size
        on_file(local.relative, "uploaded")

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(one, local) for local in local_files]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:  # the first refusal stops the upload with its reason
                future.cancel()
            raise
    outcome.uploaded.sort()
    outcome.skipped.sort()
    return outcome
