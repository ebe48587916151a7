from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from core.inference_keys import generate
from core.processes import ManagedProcess
from gateway.app import GatewayApp
from gateway.keys import PostgresKeySource
from gateway.limits import Limiter
from gateway.routes import Backend, RouteTable
from gateway.serve import serve_in_background
from gateway.sources import InMemoryRouteSource
from gateway.usage import UsageRecorder
from runtime.launch import sim_runtime_process
from tests.helpers import unique

FAST = ("--sim-ttft-ms", "5", "--sim-tpot-ms", "5")


@dataclass
class Runtimes:
    alpha_1: ManagedProcess  # two replicas serving "alpha"
    alpha_2: ManagedProcess
    beta: ManagedProcess  # one replica serving "beta"
    start: Callable[..., ManagedProcess]


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtimes]:
    """Real simulated runtimes, started in parallel, stopped when the module ends."""
    log_dir = tmp_path_factory.mktemp("gateway-runtime-logs")
    started: list[ManagedProcess] = []

    def start(*args: str, model: str = "alpha", wait: bool = True) -> ManagedProcess:
        process = sim_runtime_process(model, log_dir, args)
        process.start()
        started.append(process)
        if wait:
            process.wait_healthy()
        return process

    try:
        alpha_1, alpha_2 = start(*FAST, wait=False), start(*FAST, wait=False)
        beta = start(*FAST, model="beta", wait=False)
        for process in (alpha_1, alpha_2, beta):
            process.wait_healthy()
        yield Runtimes(alpha_1, alpha_2, beta, start)
    finally:
        for process in started:
            process.stop()


@dataclass
class Gateway:
    app: GatewayApp
    source: InMemoryRouteSource
    url: str
    client: httpx.AsyncClient

    async def set_routes(self, routes: dict[str, list[Backend]]) -> None:
        self.source.set(RouteTable(routes=routes))
        await self.app.refresh_routes()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A gateway served in this test's event loop, routing from an in-memory table the test sets, without keys."""
    source = InMemoryRouteSource()
    app = GatewayApp(source, poll_interval_s=0.1, down_for_s=2.0, cold_start_wait_s=0.3)
    async with serve_in_background(app) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Gateway(app, source, url, client)


# ----- keys, limits and metering: a gateway over the session's PostgreSQL and Redis ------------------------------


async def new_project(db_pool, quota: int | None = None) -> str:
    return str(await db_pool.fetchval(
        "INSERT INTO projects (name, monthly_token_quota) VALUES ($1, $2) RETURNING id", unique("gw-project"), quota))  # fmt: skip


async def new_key(db_pool, project_id: str, *, routes: list[str] | None = None, rpm: int | None = None,
                  tpm: int | None = None, expires_at=None) -> tuple[str, str]:
    """A key in inference_keys as the control plane writes it: (plaintext, key id)."""
    plaintext, prefix, key_digest = generate()
    key_id = await db_pool.fetchval(
        "INSERT INTO inference_keys (project_id, name, prefix, digest, routes, rpm, tpm, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        uuid.UUID(project_id), unique("key"), prefix, key_digest, routes, rpm, tpm, expires_at,
    )  # fmt: skip
    return plaintext, str(key_id)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class KeyedGateway:
    app: GatewayApp
    source: InMemoryRouteSource
    url: str
    client: httpx.AsyncClient  # sends no key of its own

    async def set_routes(self, routes: dict[str, tuple[str, list[Backend]]], spill: dict[str, int] | None = None):
        """Route name -> (project id, backends)."""
        self.source.set(RouteTable.model_validate({"routes": {
            name: {"project_id": project, "spill_queue_depth": (spill or {}).get(name), "backends": backends}
            for name, (project, backends) in routes.items()}}))  # fmt: skip
        await self.app.refresh_routes()


@asynccontextmanager
async def keyed_gateway(postgres_url: str, redis_url: str | None, source: InMemoryRouteSource | None = None,
                        **options) -> AsyncIterator[KeyedGateway]:
    """A gateway as `python -m gateway` builds it (keys from PostgreSQL, limits in Redis, usage rows), served in
    this test's event loop with an in-memory route table."""
    source = source or InMemoryRouteSource()
    app = GatewayApp(
        source,
        key_source=PostgresKeySource(postgres_url, poll_interval_s=0.5),
        limiter=Limiter(redis_url) if redis_url else None,
        usage=UsageRecorder(postgres_url, flush_interval_s=options.pop("usage_flush_interval_s", 0.2)),
        poll_interval_s=0.1,
        down_for_s=2.0,
        cold_start_wait_s=options.pop("cold_start_wait_s", 0.3),
        provider_allow_private=options.pop("provider_allow_private", True),  # the test providers are on 127.0.0.1
        **options,
    )
    async with serve_in_background(app) as server:
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield KeyedGateway(app, source, url, client)


@pytest.fixture
async def keyed(postgres_url, db_pool, redis_url) -> AsyncIterator[KeyedGateway]:
    async with keyed_gateway(postgres_url, redis_url) as gateway:
        yield gateway
