"""PostgreSQL asks every connection for the password: the tests' server, and a data folder from an earlier
version that trusted every local connection, upgraded on its next start."""

from __future__ import annotations

import os
import pwd
import subprocess

import asyncpg
import pytest

from core.processes import free_port
from core.settings import url_password, url_with_password
from devstack import services
from tests.helpers import server_state_dir


@pytest.fixture
def no_ambient_password(monkeypatch: pytest.MonkeyPatch):
    """libpq's and asyncpg's fallbacks (PGPASSWORD, ~/.pgpass) must not supply a password behind the test's back."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", "/nonexistent/pgpass")


async def refused(url: str) -> str:
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)) as error:
        connection = await asyncpg.connect(url, timeout=10)
        await connection.close()
    return str(error.value)


async def answers(url: str) -> int:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


async def test_the_test_server_refuses_a_connection_without_the_password_or_with_a_wrong_one(
        postgres_url: str, no_ambient_password):
    assert url_password(postgres_url)
    assert await answers(postgres_url) == 1
    without = postgres_url.replace(f":{url_password(postgres_url)}@", "@")
    assert "password" in await refused(without)
    assert "password authentication failed" in await refused(url_with_password(postgres_url, "not-the-password"))


def psql_without_password(port: int) -> subprocess.CompletedProcess:
    """psql over TCP with no password to give (-w: fail instead of prompting)."""
    return subprocess.run([str(services._postgres_bin() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "bud",
                           "-d", "postgres", "-w", "-tAc", "SELECT 1"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PGPASSFILE": "/nonexistent"})


@pytest.mark.timeout(120)
async def test_a_data_folder_that_trusted_every_connection_asks_for_the_password_after_its_next_start(
        no_ambient_password):
    with server_state_dir("bud-pg-upgrade-") as state:
        data_dir = state / "postgres"
        system_user = services._postgres_user()  # as the earlier version did: initdb --auth=trust
        data_dir.mkdir()
        if system_user:
            entry = pwd.getpwnam(system_user)
            os.chown(data_dir, entry.pw_uid, entry.pw_gid)
            data_dir.chmod(0o700)
        subprocess.run([str(services._postgres_bin() / "initdb"), "-D", str(data_dir), "-U", "bud", "--auth=trust",
                        "--encoding=UTF8", "--no-instructions"], check=True, capture_output=True, user=system_user)

        port, password = free_port(), "upgraded-password"
        server = services.postgres_server(state, port, password, fast_unsafe=True).start().wait_healthy()
        try:
            services.ensure_database(port, password)
            url = f"postgresql://bud:{password}@127.0.0.1:{port}/bud"
            assert await answers(url) == 1
            assert "password" in await refused(f"postgresql://bud@127.0.0.1:{port}/bud")
            assert "password authentication failed" in await refused(url_with_password(url, "wrong"))
            no_password = psql_without_password(port)
            assert no_password.returncode != 0 and "password" in no_password.stderr
            hba = (data_dir / "pg_hba.conf").read_text().splitlines()
            methods = {line.split()[-1] for line in hba if line.strip() and not line.lstrip().startswith("#")}
            assert methods == {"scram-sha-256"}
        finally:
            server.stop()
        # The next start finds nothing left to upgrade and keeps the password.
        server = services.postgres_server(state, port, password, fast_unsafe=True).start().wait_healthy()
        try:
            assert await answers(f"postgresql://bud:{password}@127.0.0.1:{port}/bud") == 1
        finally:
            server.stop()
