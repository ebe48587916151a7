from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from core.processes import ManagedProcess
from gateway.app import GatewayApp
from gateway.routes import Backend, RouteTable
from gateway.serve import serve_in_background
from gateway.sources import InMemoryRouteSource
from runtime.launch import sim_runtime_process

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
