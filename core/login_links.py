"""One-time sign-in codes for the dashboard: `bud dev up` issues one and prints a link with it; the API trades it,
once and before it expires, for a token. Codes live as files in the state folder (the CLI and the API of the dev
stack share it), named by the code's SHA-256, so a code is never stored and a listing reveals none."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from pathlib import Path

CODE_TTL_S = 900
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _folder(state_dir: Path) -> Path:
    return state_dir / "login-codes"


def _path(state_dir: Path, code: str) -> Path:
    return _folder(state_dir) / hashlib.sha256(code.encode()).hexdigest()


def issue_code(state_dir: Path, ttl_s: float = CODE_TTL_S) -> str:
    """A new code good for one sign-in within `ttl_s` seconds; expired codes left behind are removed."""
    folder = _folder(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    for stale in folder.iterdir():
        try:
            if float(stale.read_text() or 0) < now:
                stale.unlink()
        except (OSError, ValueError):
            pass
    code = secrets.token_urlsafe(24)
    fd = os.open(_path(state_dir, code), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(repr(now + ttl_s))
    return code


def redeem_code(state_dir: Path, code: str) -> bool:
    """True once for a code issued and not expired; False for any other (unknown, used, expired, malformed)."""
    if not CODE_PATTERN.match(code):
        return False
    path = _path(state_dir, code)
    taken = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        os.rename(path, taken)  # atomic: of two redemptions racing, one finds the file gone
    except FileNotFoundError:
        return False
    try:
        expires_at = float(taken.read_text() or 0)
    except (OSError, ValueError):
        expires_at = 0.0
    taken.unlink(missing_ok=True)
    return expires_at >= time.time()
