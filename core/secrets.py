"""Secrets at rest (kubeconfigs, provider API keys): encrypted with one key from the settings, never stored plain.

Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) authenticates what it decrypts, so a ciphertext changed
in the database fails loudly instead of yielding garbage. The key comes from `BUD_SECRET_KEY`; the dev stack and
the tests generate one into their state folder (mode 600) on the first start, and production refuses to start
without one (core.settings).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"  # stored values say how they were sealed, so another scheme can be added beside this one


class SecretUnreadable(RuntimeError):
    """A sealed value that this key cannot open (another key, or the value was altered)."""


class SecretBox:
    def __init__(self, key: str):
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError) as error:
            raise ValueError("BUD_SECRET_KEY must be a urlsafe-base64 32-byte key "
                             "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
                             ) from error

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretUnreadable("not a sealed value")
        try:
            return self._fernet.decrypt(sealed.removeprefix(PREFIX).encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise SecretUnreadable("the secret cannot be opened with this BUD_SECRET_KEY") from None


def ensure_key_file(path: Path) -> str:
    """The key stored at `path`, created (mode 600, owner only) on first use: the dev stack's and tests' key."""
    return ensure_secret_file(path, lambda: Fernet.generate_key().decode("ascii"))


def ensure_password_file(path: Path) -> str:
    """A random password stored at `path`, created (mode 600) on first use: the dev stack's PostgreSQL and Redis
    passwords. URL-safe characters only, so it goes into a connection URL as it is."""
    return ensure_secret_file(path, lambda: secrets.token_urlsafe(24))


def ensure_secret_file(path: Path, generate: Callable[[], str]) -> str:
    """The secret stored at `path`, created from `generate()` (mode 600, owner only) on first use.

    The file appears whole or not at all (written aside, then hard-linked into place), so processes starting
    together (the API and a worker) all read the same complete secret.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate() + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process put its secret there first: use theirs
        finally:
            draft.unlink()
    return path.read_text().strip()
