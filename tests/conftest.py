"""Session fixtures: real Temporal (dev server and time-skipping server), PostgreSQL, Redis, the S3 server, the API.

Every server runs from the binaries the project installs (.venv/bin), on free ports, with state in a temporary
folder; nothing touches .bud/.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.db import apply_migrations, create_pool
from core.settings import Settings
from core.temporal import DATA_CONVERTER
from devstack import services
from devstack.clamd import clamd_process
from core.processes import free_port
from tests.helpers import server_state_dir
from worker.clients import Clients, build_clients, supervise_local_replicas
from worker.queues import setup_for

VENV_BIN = Path(sys.executable).parent
S3_KEY, S3_SECRET = "test-access", "test-secret"


def pytest_addoption(parser):
    parser.addoption("--record-histories", action="store_true",
                     help="run the scenarios that record workflow histories into tests/histories")


def pytest_configure(config):
    config.addinivalue_line("markers", "record_history: records a workflow history (only with --record-histories)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--record-histories"):
        return
    recorders = [item for item in items if item.get_closest_marker("record_history")]
    if recorders:
        config.hook.pytest_deselected(items=recorders)
        items[:] = [item for item in items if item not in recorders]


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    """Outside pytest's tmp root, which pytest keeps at mode 700: PostgreSQL runs as another user and must reach it."""
    with server_state_dir("bud-test-") as path:
        yield path


@pytest.fixture(scope="session")
def postgres_url(state_dir: Path) -> Iterator[str]:
    """PostgreSQL asking every connection for the password, a fresh random one each session."""
    port, password = free_port(), secrets.token_urlsafe(24)
    server = services.postgres_server(state_dir, port, password, fast_unsafe=True).start().wait_healthy()
    services.ensure_database(port, password)
    yield f"postgresql://bud:{password}@127.0.0.1:{port}/bud"
    server.stop()


@pytest.fixture(scope="session")
def redis_url(state_dir: Path) -> Iterator[str]:
    """Redis requiring a fresh random password each session (the gateway's limit counters)."""
    port, password = free_port(), secrets.token_urlsafe(24)
    server = services.redis_server(state_dir, port, password).start().wait_healthy()
    yield f"redis://:{password}@127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(state_dir: Path) -> Iterator[str]:
    port = free_port()
    server = services.s3_server(state_dir, port, S3_KEY, S3_SECRET, ("models", "other-bucket")).start().wait_healthy()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def clamd_port(state_dir: Path) -> Iterator[int]:
    """A real clamd with the project's shipped signatures (EICAR among them) and the production stream limit."""
    port = free_port()
    server = clamd_process(state_dir / "clamd", port).start().wait_healthy()
    yield port
    server.stop()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(VENV_BIN / "temporal"), data_converter=DATA_CONVERTER, ui=False
    )
    yield env
    await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(VENV_BIN / "temporal-test-server"), data_converter=DATA_CONVERTER
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture(scope="session")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def prometheus_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def settings(state_dir: Path, postgres_url: str, redis_url: str, s3_endpoint: str, temporal_address: str,
             clamd_port: int, gateway_port: int, prometheus_port: int) -> Settings:
    return Settings(
        state_dir=state_dir,
        database_url=postgres_url,
        redis_url=redis_url,
        temporal_address=temporal_address,
        s3_endpoint=s3_endpoint,
        s3_access_key=S3_KEY,
        s3_secret_key=S3_SECRET,
        clamd_port=clamd_port,
        gateway_port=gateway_port,
        local_cluster_gpu_count=8,
        local_cluster_simulation=None,  # the shared cluster runs at the predicted speed; tests that need a
        # distortion register a cluster of their own
        deploy_ready_timeout_s=60,
        autoscale_sync_s=1.0,
        scale_to_zero_min_s=1,  # scale-to-zero tests idle for seconds, not minutes
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        reoptimize_interval_s=3600,  # tests observe on demand (POST .../metrics/refresh)
    )


@pytest_asyncio.fixture(scope="session")
async def db_pool(settings: Settings):
    pool = await create_pool(settings.database_url)
    await apply_migrations(pool)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest_asyncio.fixture(scope="session")
async def worker_clients(settings: Settings, db_pool, temporal_client: Client) -> AsyncIterator[Clients]:
    """The clients a worker process builds (object store, clamd, HTTP, backends), sharing the session's pool.
    At the end of the session every local replica still running stops (a failed test leaves no runtime behind)."""
    async with build_clients(settings, temporal_client, pool=db_pool) as clients:
        yield clients
        clients.local_backend.stop_all_replicas()


@pytest_asyncio.fixture(scope="session")
async def control_worker(settings: Settings, worker_clients: Clients, temporal_client: Client) -> AsyncIterator[Worker]:
    """An in-process worker on the control queue with the production registrations."""
    setup = setup_for(settings.control_queue, worker_clients)
    worker = Worker(temporal_client, task_queue=settings.control_queue, workflows=setup.workflows,
                    activities=setup.activities, max_concurrent_activities=200)
    supervisor = asyncio.create_task(supervise_local_replicas(worker_clients, interval_s=0.5))
    async with worker:
        yield worker
    supervisor.cancel()


@pytest_asyncio.fixture(scope="session")
async def optimizer_worker(settings: Settings, worker_clients: Clients, temporal_client: Client) -> AsyncIterator[Worker]:
    setup = setup_for(settings.optimizer_queue, worker_clients)
    async with Worker(temporal_client, task_queue=settings.optimizer_queue, workflows=setup.workflows,
                      activities=setup.activities) as worker:
        yield worker


@pytest_asyncio.fixture(scope="session")
async def app(settings: Settings, db_pool):
    from api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="session")
async def admin_token(app, settings: Settings) -> str:
    return (settings.state_dir / "admin-token").read_text().strip()


@pytest_asyncio.fixture(scope="session")
async def api(app, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the API, authenticated as the admin of the default project."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30,
                                 headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


@pytest_asyncio.fixture(scope="session")
async def anon_api(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api", timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def gateway(settings: Settings, db_pool, state_dir: Path) -> Iterator[str]:
    """The real gateway process reading routes and inference keys from PostgreSQL, limits in Redis: what
    inference_url points at (calls need the inference key, tests.deploy_helpers.inference_key_headers)."""
    port = settings.gateway_port
    process = services.python_service(
        "gateway", ["gateway", "--port", str(port), "--route-source", "gateway.postgres_source:from_environment",
                    "--poll-interval-s", "0.2"],
        state_dir, {"BUD_DATABASE_URL": settings.database_url, "BUD_REDIS_URL": settings.redis_url,
                    "BUD_STATE_DIR": str(state_dir),  # the state folder's secret key opens provider keys
                    "BUD_PROVIDER_ALLOW_PRIVATE_URLS": str(settings.provider_allow_private_urls)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    ).start().wait_healthy()
    yield f"http://127.0.0.1:{port}/v1"
    process.stop()


@pytest.fixture(scope="session")
def prometheus(settings: Settings, state_dir: Path) -> Iterator[str]:
    """Real Prometheus scraping every local replica each second (the backend writes its file_sd targets)."""
    port = int(settings.prometheus_url.rsplit(":", 1)[1])
    process = services.prometheus_server(state_dir, port, {}, scrape_interval_s=1).start().wait_healthy()
    yield settings.prometheus_url
    process.stop()


@pytest.fixture
def start_worker(state_dir: Path):
    """Start `python -m worker` processes for a test; whatever the test's outcome, none outlives it."""
    from tests.helpers import start_worker_process

    started = []

    def start(queue_settings: Settings, **kwargs):
        process = start_worker_process(queue_settings, state_dir, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest_asyncio.fixture
async def api_url(app):
    """The session's API served over HTTP by uvicorn on the test's event loop (browsers and CLI commands need a real socket)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving
