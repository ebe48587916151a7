"""The local Kubernetes cluster as part of the dev stack (`bud dev up --kube`): started with the rest, recorded in
pid files so `bud dev status|down` find it from another shell, and registered through the API as `kube-local`.

The cluster's state (certificates, etcd data, logs, kubeconfig) lives under STATE/kube and its API server keeps one
port (BUD_KUBE_APISERVER_PORT, default 6443), so the kubeconfig registered once stays valid across restarts:

    export KUBECONFIG=.bud/kube/kubeconfig
    kubectl get nodes
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devstack.kube import (
    BINARIES,
    DEFAULT_NODE_POOLS,
    KubeCluster,
    NodePool,
    ensure_binaries,
)
from devstack.pidfiles import PidFiles
from core.processes import StartupError

CLUSTER_NAME = "kube-local"
DEFAULT_APISERVER_PORT = 6443
Printer = Callable[[str], None]


def apiserver_port() -> int:
    return int(os.environ.get("BUD_KUBE_APISERVER_PORT", DEFAULT_APISERVER_PORT))


def gpu_inventory(node_pools: Sequence[NodePool]) -> list[dict]:
    """The cluster's GPUs as POST /api/clusters wants them: one entry per GPU type."""
    totals: dict[str, dict] = {}
    for pool in node_pools:
        entry = totals.setdefault(pool.gpu_type, {"gpu_type": pool.gpu_type, "count": 0,
                                                  "gpus_per_node": pool.gpus_per_node})
        entry["count"] += pool.count * pool.gpus_per_node
        entry["gpus_per_node"] = max(entry["gpus_per_node"], pool.gpus_per_node)
    return [entry for entry in totals.values() if entry["count"] > 0]


async def register_kube_cluster(
    api: httpx.AsyncClient, kubeconfig: str, node_pools: Sequence[NodePool] = DEFAULT_NODE_POOLS,
    name: str = CLUSTER_NAME,
) -> dict:
    """Register the cluster as a `kubernetes` cluster through the API (`api` carries the admin token); a cluster
    of that name already registered is returned as is. Returns the cluster record (GET /api/clusters/{id})."""
    listed = await api.get("/api/clusters")
    listed.raise_for_status()
    for cluster in listed.json():
        if cluster["name"] == name:
            return cluster
    created = await api.post(
        "/api/clusters",
        json={"name": name, "kind": "kubernetes", "gpus": gpu_inventory(node_pools), "kubeconfig": kubeconfig},
    )
    created.raise_for_status()
    fetched = await api.get(f"/api/clusters/{created.json()['id']}")
    fetched.raise_for_status()
    return fetched.json()


class DevKube:
    """Start, inspect and stop the dev stack's KubeCluster through pid files in `pid_dir` (one per process)."""

    def __init__(
        self,
        state_dir: Path,
        pid_dir: Path,
        bin_dir: Path | None = None,
        node_pools: Sequence[NodePool] = DEFAULT_NODE_POOLS,
        port: int | None = None,
    ):
        self.kube_dir = state_dir / "kube"
        self.pid_dir = pid_dir
        self.pids = PidFiles(pid_dir)
        self.bin_dir = bin_dir
        self.node_pools = list(node_pools)
        self.port = port or apiserver_port()

    @property
    def kubeconfig_path(self) -> Path:
        return self.kube_dir / "kubeconfig"

    def running_pid(self, name: str) -> int | None:
        return self.pids.running_pid(name)

    def was_started(self) -> bool:
        """Whether `up` recorded this cluster (so status and down include it without --kube)."""
        return any(self.pids.exists(name) for name in BINARIES)

    def up(self, echo: Printer) -> None:
        running = [name for name in BINARIES if self.running_pid(name)]
        if len(running) == len(BINARIES):
            echo(f"  {'kubernetes':<22} already running  {self.kubeconfig_path}")
            return
        if running:  # a partial cluster (one part crashed): restart it whole
            self.down(echo)
        started = time.monotonic()
        try:
            bin_dir = self.bin_dir or ensure_binaries()
        except (subprocess.CalledProcessError, FileNotFoundError) as error:
            raise StartupError(f"the Kubernetes binaries could not be built: {error}") from error
        cluster = KubeCluster(self.kube_dir, bin_dir, self.node_pools, apiserver_port=self.port)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        cluster.start()  # stops what it started if it fails
        for process in cluster.processes:
            self.pids.record(process.name, process.pid)
        nodes = ", ".join(f"{p.count}x{p.gpus_per_node} {p.gpu_type}" for p in self.node_pools)
        echo(f"  {'kubernetes':<22} ready in {time.monotonic() - started:4.1f}s  {cluster.server_url} ({nodes})")

    def cluster_health(self) -> str:
        """'healthy (N/M nodes Ready)' from the API server, or why not."""
        try:
            with k8s_config.new_client_from_config(config_file=str(self.kubeconfig_path)) as api:
                nodes = k8s.CoreV1Api(api).list_node(_request_timeout=3).items
        except Exception as error:  # any failure to answer is "unhealthy" here, with its reason
            return f"unhealthy ({type(error).__name__})"
        ready = sum(
            any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []) for node in nodes
        )
        return f"healthy ({ready}/{len(nodes)} nodes Ready)" if nodes and ready == len(nodes) else (
            f"unhealthy ({ready}/{len(nodes)} nodes Ready)"
        )

    def status_rows(self) -> list[tuple[str, str, str]]:
        rows = []
        for name in BINARIES:
            pid = self.running_pid(name)
            log = str(self.kube_dir / "logs" / f"{name}.log")
            rows.append((name, f"healthy (pid {pid})" if pid else "stopped", log))
        state = self.cluster_health() if rows and all(r[1] != "stopped" for r in rows) else "stopped"
        rows.append((CLUSTER_NAME, state, f"KUBECONFIG={self.kubeconfig_path}"))
        return rows

    def down(self, echo: Printer, timeout_s: float = 20.0) -> None:
        """Stop the recorded processes, newest first: SIGTERM, then SIGKILL after timeout_s."""
        for name in reversed(BINARIES):
            if self.pids.stop(name, timeout_s=timeout_s):
                echo(f"  {name:<22} stopped")

    def register(self, api_url: str, token: str, echo: Printer) -> None:
        """Register the running cluster through the API at api_url (idempotent by name)."""

        async def run() -> dict:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
                return await register_kube_cluster(api, self.kubeconfig_path.read_text(), self.node_pools)

        try:
            cluster = asyncio.run(run())
        except httpx.HTTPError as error:
            raise StartupError(f"could not register {CLUSTER_NAME} through {api_url}: {error}") from error
        echo(f"  {CLUSTER_NAME:<22} registered as cluster {cluster['id']} ({cluster['status']})")
