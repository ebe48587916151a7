"""PostgreSQL going away under the API: clean 503 JSON with Retry-After while it is down, and recovery by itself."""

from __future__ import annotations

import asyncio
import secrets

import httpx

from api.app import create_app
from core.processes import free_port
from devstack import services
from tests.helpers import server_state_dir


async def test_requests_during_an_outage_get_503_json_and_the_api_recovers(settings):
    with server_state_dir("bud-outage-") as state:
        port, password = free_port(), secrets.token_urlsafe(24)
        database = services.postgres_server(state, port, password, fast_unsafe=True)
        await asyncio.to_thread(lambda: database.start().wait_healthy())
        await asyncio.to_thread(services.ensure_database, port, password)
        own = settings.model_copy(update={"database_url": f"postgresql://bud:{password}@127.0.0.1:{port}/bud",
                                          "state_dir": state})
        app = create_app(own)
        try:
            async with app.router.lifespan_context(app):
                token = own.admin_token_path.read_text().strip()
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                           headers={"Authorization": f"Bearer {token}"})
                async with client:
                    assert (await client.get("/api/models")).status_code == 200
                    await asyncio.to_thread(database.stop)
                    for _ in range(5):  # pooled connections die first, then new ones are refused
                        reply = await client.get("/api/models")
                        assert reply.status_code == 503, reply.text
                        assert reply.headers["retry-after"].isdigit()
                        assert reply.json()["error"]["code"] == "unavailable"
                    await asyncio.to_thread(lambda: database.start().wait_healthy())
                    for _ in range(50):
                        if (await client.get("/api/models")).status_code == 200:
                            break
                        await asyncio.sleep(0.2)
                    else:
                        raise AssertionError("the API did not recover after PostgreSQL came back")
        finally:
            await asyncio.to_thread(database.stop)
