"""Redis as the stack runs it: every command needs the password, which no command line shows, and nothing is
written to disk."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from core.settings import url_password


def listener(port: int) -> psutil.Process:
    pid = next(c.pid for c in psutil.net_connections(kind="tcp")
               if c.status == psutil.CONN_LISTEN and c.laddr.port == port)
    return psutil.Process(pid)


def test_redis_refuses_commands_without_the_password_and_serves_them_with_it(redis_url: str, state_dir: Path):
    port, password = urlsplit(redis_url).port, url_password(redis_url)
    assert password

    anonymous = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("limit:anonymous", 1)
    with pytest.raises(redis.AuthenticationError):
        anonymous.get("limit:anonymous")
    wrong = redis.Redis(host="127.0.0.1", port=port, password="not-the-password", socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    assert client.incr("limit:test-key") == 1 and client.incr("limit:test-key") == 2
    assert client.get("limit:test-key") == b"2"
    client.delete("limit:test-key")
    # Limit counters are not persisted: no snapshots, no append-only file.
    assert client.config_get("save") == {"save": ""} and client.config_get("appendonly") == {"appendonly": "no"}
    assert client.config_get("bind")["bind"] == "127.0.0.1"

    server = listener(port)
    assert password not in " ".join(server.cmdline())
    config = state_dir / "redis" / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and password in config.read_text()
