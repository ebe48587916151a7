"""What a model's prefix may hold before the registry scans it: how many objects, how large each, which names.

RegisterModel runs a few activities per object (at most workflows.register_model.MAX_ACTIVITIES_IN_FLIGHT at once,
below Temporal's 2,000 pending activities per workflow), and every object's result is kept in the workflow's
history, so the number of objects is bounded: 1,000 objects stay far inside Temporal's history limits (51,200
events, 2 MB per payload: the listing of 1,000 objects with the longest allowed names is about 1.6 MB). Published checkpoints hold a
few dozen files (DeepSeek-V3, among the largest, 170); more than 1,000 is an upload of the wrong folder.

One file may be at most 64 GiB: checkpoints shard their weights into files of a few GB, and at 20 MB/s a 64 GiB
file's checksum and ClamAV scan (each a STREAMING activity of workflows/register_model.py, 2 hours at most) take
under an hour.

A name must be a plain relative path: the registry moves objects to `quarantine/<id>/<path>` and deployments copy
them to `<cache>/<path>`, so `..`, empty segments, backslashes and control characters (a newline would also forge
lines in logs and reports) are refused, as are names longer than 512 bytes.

A prefix breaking one of these rules is FAILED with the reason, before anything is read: nothing was scanned, and
the objects stay where they are for the user to fix.
"""

from __future__ import annotations

import unicodedata

from pydantic import BaseModel, Field

GiB = 1024**3
MiB = 1024**2
MAX_OBJECTS_PER_MODEL = 1_000
MAX_FILE_BYTES = 64 * GiB
MAX_PATH_BYTES = 512


class ModelObjectLimits(BaseModel, frozen=True):
    max_objects: int = Field(default=MAX_OBJECTS_PER_MODEL, gt=0)
    max_file_bytes: int = Field(default=MAX_FILE_BYTES, gt=0)


def format_size(size: int) -> str:
    """'30.0 MB', '1.5 GB', '812 bytes' (binary units: 1 MB = 1024 * 1024 bytes)."""
    if size >= GiB:
        return f"{size / GiB:.1f} GB"
    if size >= MiB:
        return f"{size / MiB:.1f} MB"
    return f"{size:,} bytes"


def format_limit(size: int) -> str:
    """A limit as people state it: '4 MB', '64 GB'."""
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GB"
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MB"
    return format_size(size)


def path_problem(path: str) -> str | None:
    """Why `path` (relative to the model's prefix) cannot be a model file's name; None when it can."""
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if any(unicodedata.category(char) == "Cc" for char in path):
        return "contains control characters (newline, tab, NUL, ...)"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        return "has an empty, '.' or '..' path segment"
    return None
