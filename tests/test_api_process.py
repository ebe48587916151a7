"""The API as `python -m api` serves it: what reaches its log."""

from __future__ import annotations

import asyncio

import httpx

from core.processes import free_port
from devstack import services


async def test_a_token_in_a_query_string_never_reaches_the_access_log(settings, db_pool, state_dir, admin_token):
    port = free_port()
    process = services.python_service(
        "api-log-check", ["api"], state_dir, {**settings.as_environment(), "BUD_API_PORT": str(port)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    ).start()
    try:
        await asyncio.to_thread(process.wait_healthy)
        secret = "tok_" + "s3cr3t" * 4
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{port}/api/models", params={"token": secret},
                                     headers={"Authorization": f"Bearer {admin_token}"})
        assert reply.status_code == 200
    finally:
        process.stop()
    log = process.log_path.read_text()
    assert '"GET /api/models HTTP/1.1" 200' in log  # the request is logged ...
    assert secret not in log and admin_token not in log  # ... without what it carried
