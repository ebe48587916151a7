"""`python -m worker --queue bud-control`: one horizontally scalable worker process for one task queue."""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from core.db import apply_migrations, create_pool
from core.logging import configure_logging, get_logger
from core.settings import get_settings
from core.temporal import connect_temporal
from worker.queues import setup_for

log = get_logger("worker")


async def run_worker(queue: str) -> None:
    settings = get_settings()
    configure_logging(settings.env)
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    await apply_migrations(pool)
    runtime = None
    if settings.worker_metrics_port:
        # The SDK's own metrics (task latencies, slots, polls) for Prometheus; also the worker's liveness port.
        runtime = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.worker_metrics_port}")))
    client = await connect_temporal(settings.temporal_address, settings.temporal_namespace, runtime=runtime)
    setup = setup_for(queue, settings, pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=8) as sync_executor:
        worker = Worker(
            client,
            task_queue=queue,
            workflows=setup.workflows,
            activities=setup.activities,
            activity_executor=sync_executor,
            graceful_shutdown_timeout=timedelta(seconds=10),
        )
        log.info("worker started", queue=queue, workflows=[w.__name__ for w in setup.workflows])
        async with worker:
            await stop.wait()
            log.info("worker stopping", queue=queue)
    await pool.close()
    log.info("worker stopped", queue=queue)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--queue", default=get_settings().control_queue, help="task queue (bud-control or bud-optimizer)")
    args = parser.parse_args()
    asyncio.run(run_worker(args.queue))


if __name__ == "__main__":
    main()
