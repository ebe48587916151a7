"""`bud dev up --kube`'s cluster: started and found again through pid files, shown in status, registered through
the API as a `kubernetes` cluster, stopped without leftovers."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from devstack.kube import BINARIES, KubeCluster, NodePool
from devstack.kube_stack import CLUSTER_NAME, DevKube, gpu_inventory, register_kube_cluster
from core.processes import free_port
from core.paths import TOOLS_BIN


def test_up_status_down_and_up_again_with_the_same_kubeconfig(tmp_path: Path, kube_bin_dir: Path) -> None:
    pool = NodePool(name="a10g", count=1, gpus_per_node=4, gpu_type="nvidia-a10g")
    kube = DevKube(tmp_path / "state", tmp_path / "pids", kube_bin_dir, [pool], port=free_port())
    lines: list[str] = []
    try:
        kube.up(lines.append)
        rows = {name: state for name, state, _ in kube.status_rows()}
        assert set(rows) == {*BINARIES, CLUSTER_NAME}
        assert all(state.startswith("healthy") for state in rows.values()), rows
        assert rows[CLUSTER_NAME] == "healthy (1/1 nodes Ready)"
        pids = {name: kube.running_pid(name) for name in rows if name != CLUSTER_NAME}

        # What the user does next: kubectl with the printed KUBECONFIG.
        nodes = subprocess.run(
            [str(TOOLS_BIN / "kubectl"), "get", "nodes", "-L", "bud.ai/gpu-type", "--no-headers"],
            env={**os.environ, "KUBECONFIG": str(kube.kubeconfig_path)}, capture_output=True, text=True, check=True,
        ).stdout
        assert "a10g-0" in nodes and "nvidia-a10g" in nodes and " Ready " in nodes

        kube.up(lines.append)  # already running: nothing new starts
        assert {name: kube.running_pid(name) for name in pids} == pids
        kubeconfig = kube.kubeconfig_path.read_text()

        kube.down(lines.append)
        assert not kube.was_started()
        assert all(state == "stopped" for _, state, _ in kube.status_rows())
        for pid in pids.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

        # A restart reuses the state folder and the API server's port: the kubeconfig registered before still works.
        kube.up(lines.append)
        assert kube.kubeconfig_path.read_text() == kubeconfig
        assert dict((n, s) for n, s, _ in kube.status_rows())[CLUSTER_NAME] == "healthy (1/1 nodes Ready)"
    finally:
        kube.down(lines.append)
    assert any("ready in" in line for line in lines) and any("already running" in line for line in lines)


def test_gpu_inventory_sums_pools_per_type() -> None:
    pools = [NodePool(name="h100", count=2, gpus_per_node=8, gpu_type="nvidia-h100-80gb"),
             NodePool(name="h100b", count=1, gpus_per_node=4, gpu_type="nvidia-h100-80gb"),
             NodePool(name="cpu", count=2, gpus_per_node=0, gpu_type="nvidia-l4")]
    assert gpu_inventory(pools) == [{"gpu_type": "nvidia-h100-80gb", "count": 20, "gpus_per_node": 8}]


async def test_registered_through_the_api_as_a_kubernetes_cluster(
    api, control_worker, kube_cluster: KubeCluster
) -> None:
    name = f"kube-{os.urandom(3).hex()}"
    cluster = await register_kube_cluster(api, kube_cluster.kubeconfig, kube_cluster.node_pools, name=name)
    assert cluster["kind"] == "kubernetes"

    async with asyncio.timeout(60):
        while cluster["status"] == "REGISTERING":
            await asyncio.sleep(0.2)
            cluster = (await api.get(f"/api/clusters/{cluster['id']}")).json()
    assert cluster["status"] == "READY", cluster["error"]
    assert cluster["facts"]["observed_gpus"] == {"nvidia-h100-80gb": 16, "nvidia-l40s": 4}
    assert cluster["facts"]["nodes"] == 3

    again = await register_kube_cluster(api, kube_cluster.kubeconfig, kube_cluster.node_pools, name=name)
    assert again["id"] == cluster["id"]  # registering twice is harmless
