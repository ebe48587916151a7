"""How the control plane grows: N endpoints deployed, scaled and deleted on the Kubernetes test cluster.

A fresh stack per worker count (1, 2, 4 control workers and one optimizer worker) runs against one local
kube-apiserver whose kwok GPU nodes cost nothing, so the numbers are the control plane's own: Temporal, PostgreSQL,
Helm and the API. For each N it creates N endpoints with a manual config (TP 1, one replica), deploys them all at
once, scales each to two replicas and deletes them, and prints:

- deploys per minute (N over the wall time from the first POST /deploy to the last RUNNING) and p50/p95 of each
  endpoint's POST /deploy -> RUNNING;
- Temporal actions per deploy: the billable events of the DeployEndpoint history (workflow and child starts,
  activities, timers, signals, side effects) and its history length;
- PostgreSQL statements per deploy (pg_stat_statements calls during the deploy phase over N, less the bench's own
  polling of the endpoint list);
- the control workers' CPU seconds per deploy and their peak RSS.

    .venv/bin/python -m bench.bench_control_plane [--sizes 50,200,500] [--workers 1,2,4] [--post-concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import psutil
from temporalio.client import Client

from bench.harness import bench_stack, register_model
from devstack.kube import KubeCluster, NodePool, ensure_binaries
from tests.model_files import write_tiny_llama
from workflows.ids import deploy_endpoint_workflow_id

CONFIG = {"tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_model_len": 1024, "max_num_seqs": 4}
GPUS_PER_NODE = 8
# History events that a Temporal Cloud bill counts as actions (one each).
ACTION_EVENTS = {
    "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", "EVENT_TYPE_TIMER_STARTED",
    "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED", "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
    "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED", "EVENT_TYPE_MARKER_RECORDED",
    "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES", "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED",
}


POLLS = {"count": 0}  # list calls the bench itself makes: their SQL is subtracted from the control plane's


async def wait_all(api, ids: list[str], done, timeout: float) -> dict[str, float]:
    """Poll the endpoint list until every id satisfies `done`; returns when each first did (monotonic seconds)."""
    seen: dict[str, float] = {}
    wanted = set(ids)
    async with asyncio.timeout(timeout):
        while len(seen) < len(wanted):
            rows = {row["id"]: row for row in (await api.get("/api/endpoints")).json()}
            POLLS["count"] += 1
            now = time.perf_counter()
            for endpoint_id in wanted - seen.keys():
                row = rows.get(endpoint_id, {"status": "GONE"})
                if row["status"] == "FAILED":
                    raise RuntimeError(f"endpoint {endpoint_id} failed: {row.get('error')}")
                if done(row):
                    seen[endpoint_id] = now
            await asyncio.sleep(0.5)
    return seen


async def bounded(concurrency: int, calls) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def one(call):
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


class WorkerMeter:
    """CPU seconds and peak RSS of the control workers (with their children: helm runs as a child process)."""

    def __init__(self, pids: list[int]):
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak_rss = 0
        self._task: asyncio.Task | None = None

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        return total

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, sum(process.memory_info().rss for process in self.processes))
            await asyncio.sleep(0.5)

    def __enter__(self):
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc):
        self._task.cancel()


async def temporal_actions(settings, endpoint_ids: list[str]) -> tuple[float, float]:
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    actions, lengths = [], []
    for endpoint_id in endpoint_ids[: min(len(endpoint_ids), 40)]:  # a sample: histories of one shape
        history = await client.get_workflow_handle(deploy_endpoint_workflow_id(UUID(endpoint_id))).fetch_history()
        names = [type_name(event.event_type) for event in history.events]
        actions.append(sum(1 for name in names if name in ACTION_EVENTS))
        lengths.append(len(history.events))
    return statistics.mean(actions), statistics.mean(lengths)


def type_name(event_type: int) -> str:
    from temporalio.api.enums.v1 import EventType

    return EventType.Name(event_type)


async def statements(db) -> int:
    return await db.fetchval("SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements")


async def run_size(stack, db, meter: WorkerMeter, cluster_id: str, project_id: str, model_id: str, n: int,
                   post_concurrency: int) -> dict:
    api = stack.api

    async def create(index: int) -> str:
        endpoint = (await api.post("/api/endpoints", json={
            "name": f"cp-{n}-{index}", "project_id": project_id, "model_id": model_id,
            "cluster_id": cluster_id})).json()
        response = await api.put(f"/api/endpoints/{endpoint['id']}/config", json={
            "optimization_method": "MANUAL", "config": CONFIG, "workload": {"input_tokens": 128, "output_tokens": 32}})
        assert response.status_code == 202, response.text
        return endpoint["id"]

    ids = await bounded(post_concurrency, [lambda i=i: create(i) for i in range(n)])
    await wait_all(api, ids, lambda row: row.get("optimization_status") != "RUNNING", timeout=600)

    await db.execute("SELECT pg_stat_statements_reset()")
    await api.get("/api/endpoints")
    per_poll = await statements(db) - 1  # the reading query itself counts once
    await db.execute("SELECT pg_stat_statements_reset()")
    polls_before = POLLS["count"]
    cpu_before = meter.cpu_seconds()
    posted: dict[str, float] = {}

    async def deploy(endpoint_id: str) -> None:
        posted[endpoint_id] = time.perf_counter()
        response = await api.post(f"/api/endpoints/{endpoint_id}/deploy")
        assert response.status_code == 202, response.text

    started = time.perf_counter()
    running_task = asyncio.create_task(wait_all(api, ids, lambda row: row["status"] == "RUNNING", timeout=3600))
    await bounded(post_concurrency, [lambda e=e: deploy(e) for e in ids])
    running = await running_task
    deploy_wall = max(running.values()) - started
    deploy_cpu = meter.cpu_seconds() - cpu_before
    queries = await statements(db) - per_poll * (POLLS["count"] - polls_before)
    latencies = sorted(running[e] - posted[e] for e in ids)

    started = time.perf_counter()
    await bounded(post_concurrency, [lambda e=e: api.post(f"/api/endpoints/{e}/scale", json={"replicas": 2})
                                     for e in ids])
    await wait_all(api, ids, lambda row: row["status"] == "RUNNING" and row["deployment"]["ready_replicas"] == 2,
                   timeout=3600)
    scale_wall = time.perf_counter() - started

    started = time.perf_counter()
    await bounded(post_concurrency, [lambda e=e: api.delete(f"/api/endpoints/{e}") for e in ids])
    await wait_all(api, ids, lambda row: row["status"] in ("GONE", "DELETED"), timeout=3600)
    delete_wall = time.perf_counter() - started

    actions, history_length = await temporal_actions(stack.settings, ids)
    return {
        "deploys_per_min": n / deploy_wall * 60, "p50_s": latencies[len(latencies) // 2],
        "p95_s": latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)],
        "actions": actions, "history": history_length, "queries": queries / n, "cpu_s": deploy_cpu / n,
        "rss_mb": meter.peak_rss / 2**20, "scale_s": scale_wall, "delete_s": delete_wall,
    }


async def run_workers(kube: KubeCluster, workers: int, sizes: list[int], gpus: int, post_concurrency: int,
                      model_dir) -> list[tuple[int, int, dict]]:
    queues = ("bud-control",) * workers + ("bud-optimizer",)
    async with bench_stack(queues=queues, postgres_settings={"shared_preload_libraries": "pg_stat_statements"}) as stack:
        api, settings = stack.api, stack.settings
        db = await asyncpg.connect(settings.database_url)
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        model = await register_model(stack, model_dir)
        cluster = (await api.post("/api/clusters", json={
            "name": "bench-kube", "kind": "kubernetes", "kubeconfig": kube.kubeconfig,
            "gpus": [{"gpu_type": "nvidia-h100-80gb", "count": gpus}]})).json()
        async with asyncio.timeout(300):
            while (await api.get(f"/api/clusters/{cluster['id']}")).json()["status"] == "REGISTERING":
                await asyncio.sleep(0.5)
        registered = (await api.get(f"/api/clusters/{cluster['id']}")).json()
        assert registered["status"] == "READY", registered.get("error")
        project_id = (await api.get("/api/projects")).json()[0]["id"]
        control_pids = [worker.pid for worker in stack.workers[:workers]]
        results = []
        with WorkerMeter(control_pids) as meter:
            for n in sizes:
                figures = await run_size(stack, db, meter, cluster["id"], project_id, model["id"], n,
                                         post_concurrency)
                print(f"  workers={workers} N={n}: {format_row(figures)}", flush=True)
                results.append((workers, n, figures))
        await db.close()
    return results


def format_row(f: dict) -> str:
    return (f"{f['deploys_per_min']:.0f} deploys/min, p50 {f['p50_s']:.1f} s, p95 {f['p95_s']:.1f} s, "
            f"{f['actions']:.0f} actions ({f['history']:.0f} events)/deploy, {f['queries']:.0f} SQL/deploy, "
            f"{f['cpu_s']:.2f} worker CPU s/deploy, peak RSS {f['rss_mb']:.0f} MB, "
            f"scale {f['scale_s']:.0f} s, delete {f['delete_s']:.0f} s")


async def main(sizes: list[int], worker_counts: list[int], post_concurrency: int) -> None:
    nodes = math.ceil(2 * max(sizes) / GPUS_PER_NODE)  # every endpoint scales to two single-GPU replicas
    pools = (NodePool(name="h100", count=nodes, gpus_per_node=GPUS_PER_NODE, gpu_type="nvidia-h100-80gb"),)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_llama(Path(tmp) / "model")
        with KubeCluster(Path(tmp) / "kube", ensure_binaries(), pools, startup_timeout_s=600) as kube:
            results = []
            for workers in worker_counts:
                results += await run_workers(kube, workers, sizes, nodes * GPUS_PER_NODE, post_concurrency,
                                             model_dir)
    print("\nworkers  N     deploys/min  p50 s  p95 s  actions/deploy  SQL/deploy  CPU s/deploy  peak RSS MB")
    for workers, n, f in results:
        print(f"{workers:<8} {n:<5} {f['deploys_per_min']:<12.0f} {f['p50_s']:<6.1f} {f['p95_s']:<6.1f} "
              f"{f['actions']:<15.0f} {f['queries']:<11.0f} {f['cpu_s']:<13.2f} {f['rss_mb']:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,200,500", help="endpoint counts, comma-separated")
    parser.add_argument("--workers", default="1,2,4", help="control worker counts, comma-separated")
    parser.add_argument("--post-concurrency", type=int, default=32, help="API calls in flight at once")
    args = parser.parse_args()
    asyncio.run(main([int(s) for s in args.sizes.split(",")], [int(w) for w in args.workers.split(",")],
                     args.post_concurrency))
