"""Secrets at rest are sealed: unreadable without the key, tamper-evident, and the dev key file is private."""

from __future__ import annotations

import stat

import pytest

from core.secrets import SecretBox, SecretUnreadable, ensure_key_file


def test_sealed_values_open_only_with_their_key(tmp_path):
    box = SecretBox(ensure_key_file(tmp_path / "secret-key"))
    sealed = box.seal("users: [{user: {token: s3cr3t}}]")
    assert "s3cr3t" not in sealed and sealed.startswith("fernet:")
    assert box.open(sealed) == "users: [{user: {token: s3cr3t}}]"
    other = SecretBox(ensure_key_file(tmp_path / "another-key"))
    with pytest.raises(SecretUnreadable):
        other.open(sealed)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SecretUnreadable):
        box.open(tampered)
    with pytest.raises(SecretUnreadable):
        box.open("plain text someone wrote into the column")


def test_the_key_file_is_created_once_and_private(tmp_path):
    path = tmp_path / "state" / "secret-key"
    first = ensure_key_file(path)
    assert ensure_key_file(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_malformed_key_is_refused_with_how_to_make_one():
    with pytest.raises(ValueError, match="BUD_SECRET_KEY must be"):
        SecretBox("not-a-key")
