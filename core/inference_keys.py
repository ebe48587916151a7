"""Inference API keys: what a client sends to the gateway as `Authorization: Bearer bud-sk-<prefix8>-<secret>`.

Only the SHA-256 digest of the whole key is stored (and compared by the gateway); the prefix (`bud-sk-<prefix8>`)
is kept beside it so lists can show which key is which without holding anything that opens the gateway.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "bud-sk-"
_PREFIX_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PREFIX_LENGTH = 8


def digest(plaintext: str) -> str:
    """The stored form of a key: sha256 hex of the whole plaintext."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate() -> tuple[str, str, str]:
    """A new key as (plaintext, prefix, digest); the plaintext is shown once and never stored."""
    prefix8 = "".join(secrets.choice(_PREFIX_CHARS) for _ in range(_PREFIX_LENGTH))
    prefix = KEY_PREFIX + prefix8
    plaintext = f"{prefix}-{secrets.token_urlsafe(32)}"
    return plaintext, prefix, digest(plaintext)


def looks_like_key(text: str) -> bool:
    """Whether `text` has the shape of an inference key (a cheap check before hashing a header)."""
    return text.startswith(KEY_PREFIX) and len(text) <= 200
