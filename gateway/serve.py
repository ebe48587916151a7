"""Running a GatewayApp under uvicorn: as the main program, or inside an existing event loop (tests, embedding)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from gateway.app import GatewayApp


def uvicorn_config(app: GatewayApp, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,  # one log line per request costs more than the proxying itself
        proxy_headers=False,  # X-Forwarded-* rewriting is for apps behind a proxy; this is the proxy
        server_header=False,  # the upstream's Server and Date headers pass through instead
        date_header=False,
        backlog=4096,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )


@asynccontextmanager
async def serve_in_background(
    app: GatewayApp, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[uvicorn.Server]:
    """Serve `app` on the running loop until the block exits (routes loaded, ready for requests on entry)."""
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # re-raises the startup error
            raise RuntimeError("gateway exited during startup")
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        await task
