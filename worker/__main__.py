"""`python -m worker --queue bud-control`: one horizontally scalable worker process for one task queue."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from datetime import timedelta
from pathlib import Path

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from core.logging import configure_logging, get_logger
from core.settings import get_settings
from core.temporal import connect_temporal, temporal_tls
from worker.clients import build_clients, supervise_local_replicas
from worker.queues import setup_for

log = get_logger("worker")


def announce_ready(ready_file: Path, queue: str) -> None:
    """Write this process's pid where the dev stack looks: only this worker can prove it is the one that started
    (a metrics port answering may belong to anyone)."""
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "queue": queue}))
    tmp.replace(ready_file)


async def run_worker(queue: str, ready_file: Path | None = None) -> None:
    settings = get_settings()
    configure_logging(settings.env)
    runtime = None
    if settings.worker_metrics_port:
        # The SDK's own metrics (task latencies, slots, polls) for Prometheus.
        runtime = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{settings.worker_metrics_port}")))
    client = await connect_temporal(settings.temporal_address, settings.temporal_namespace, runtime=runtime,
                                    tls=temporal_tls(settings))
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
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_s),
        )
        log.info("worker started", queue=queue, workflows=[w.__name__ for w in setup.workflows])
        async with worker:  # polling its task queue from here on
            if ready_file is not None:
                announce_ready(ready_file, queue)
            await stop.wait()
            log.info("worker stopping", queue=queue)
            if ready_file is not None:
                ready_file.unlink(missing_ok=True)
        if supervisor:
            supervisor.cancel()
    log.info("worker stopped", queue=queue)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m worker")
    parser.add_argument("--queue", default=get_settings().control_queue, help="task queue (bud-control or bud-optimizer)")
    parser.add_argument("--ready-file", type=Path, default=None,
                        help="write {\"pid\": ...} here once polling the task queue (the dev stack's readiness check)")
    args = parser.parse_args()
    asyncio.run(run_worker(args.queue, args.ready_file))


if __name__ == "__main__":
    main()
