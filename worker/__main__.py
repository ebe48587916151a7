"""`python -m worker --queue bud-control`: one horizontally scalable worker process for one task queue."""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from core.logging import configure_logging, get_logger
from core.settings import get_settings
from core.temporal import connect_temporal
from worker.clients import build_clients, supervise_local_replicas
from worker.queues import setup_for

log = get_logger("worker")


async def run_worker(queue: str) -> None:
    settings = get_settings()
    configure_logging(settings.env)
    runtime = None
    if settings.worker_metrics_port:
        # The SDK's own metrics (task latencies, slots, polls) for Prometheus; also the worker's liveness port.
        runtime = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.worker_metrics_port}")))
    client = await connect_temporal(settings.temporal_address, settings.temporal_namespace, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with build_clients(settings, client) as clients:
        setup = setup_for(queue, clients)
        supervisor = None
        if queue == settings.control_queue:
            # Restart crashed local replicas and adopt the ones a previous worker started.
            supervisor = asyncio.create_task(supervise_local_replicas(clients))
        worker = Worker(
            client,
            task_queue=queue,
            workflows=setup.workflows,
            activities=setup.activities,
            graceful_shutdown_timeout=timedelta(seconds=10),
        )
        log.info("worker started", queue=queue, workflows=[w.__name__ for w in setup.workflows])
        async with worker:
            await stop.wait()
            log.info("worker stopping", queue=queue)
        if supervisor:
            supervisor.cancel()
    log.info("worker stopped", queue=queue)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--queue", default=get_settings().control_queue, help="task queue (bud-control or bud-optimizer)")
    args = parser.parse_args()
    asyncio.run(run_worker(args.queue))


if __name__ == "__main__":
    main()
