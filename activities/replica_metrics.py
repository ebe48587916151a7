"""Reading the Prometheus exposition of an endpoint's ready replicas (vLLM's /metrics), shared by the autoscaler and
the traffic shift's SLO gate."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from core.logging import get_logger
from control.store import endpoints

log = get_logger(__name__)


async def scrape_ready_replicas(pool: asyncpg.Pool, http: httpx.AsyncClient, endpoint_id) -> list[str]:
    """The /metrics text of every ready replica that answers. One that does not is left out, not counted as idle
    (as the HPA leaves pods without metrics out of its average)."""
    async with pool.acquire() as conn:
        urls = await endpoints.ready_replica_urls(conn, endpoint_id)
    replies = await asyncio.gather(*(http.get(f"{url}/metrics", timeout=5) for url in urls), return_exceptions=True)
    texts = []
    for url, reply in zip(urls, replies):
        if isinstance(reply, httpx.Response) and reply.status_code == 200:
            texts.append(reply.text)
        else:
            log.warning("replica metrics unreadable", url=url,
                        error=str(reply) if isinstance(reply, BaseException) else reply.status_code)
    return texts
