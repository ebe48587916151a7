"""A real Kubernetes control plane on this machine, with kwok GPU nodes, for tests and `bud dev up --kube`.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real binaries (built from the Go module
proxy by scripts/kube/build.sh); kwok plays the kubelets: it keeps the fake nodes Ready and turns pods bound to them
Running and Ready. The scheduler therefore makes real placement decisions on `nvidia.com/gpu` capacity and labels.

    with KubeCluster(state_dir, ensure_binaries()) as cluster:
        print(cluster.kubeconfig_path)

or, by hand: `python -m devstack.kube up` (prints the kubeconfig path, runs until Ctrl-C).
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from devstack.kube_pki import SERVICE_CLUSTER_IP_RANGE, ClusterPki, KeyPair, ensure_pki
from core.gpu_types import gpu_product_label
from core.processes import ManagedProcess, StartupError, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "kube" / "build.sh"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok_stages.yaml"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TYPE_LABEL = "bud.ai/gpu-type"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# kwok manages exactly the nodes that carry this annotation (--manage-nodes-with-annotation-selector).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
FAKE_NODE_LABEL = "bud.ai/fake-node"

class NodePool(BaseModel):
    """`count` identical fake nodes named <name>-0, <name>-1, ... each offering `gpus_per_node` GPUs."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(ge=1)
    gpus_per_node: int = Field(ge=0)
    gpu_type: str = Field(description="canonical GPU type, e.g. nvidia-h100-80gb (see core.gpu_types)")
    cpu: str = "192"
    memory: str = "2Ti"
    pods: str = "110"

    @property
    def gpu_product(self) -> str:
        return gpu_product_label(self.gpu_type)

    def node_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.count)]


DEFAULT_NODE_POOLS: tuple[NodePool, ...] = (
    NodePool(name="h100", count=2, gpus_per_node=8, gpu_type="nvidia-h100-80gb"),
    NodePool(name="l40s", count=1, gpus_per_node=4, gpu_type="nvidia-l40s"),
)


def ensure_binaries(build_script: Path = BUILD_SCRIPT) -> Path:
    """Run the (cached, idempotent) build and return the folder holding the five binaries.

    The first build on a machine compiles Kubernetes from source and takes many minutes; its progress goes to
    our stderr. Later calls return in well under a second.
    """
    result = subprocess.run(["bash", str(build_script)], stdout=subprocess.PIPE, text=True, check=True)
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [name for name in BINARIES if not (bin_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{build_script} reported {bin_dir} but it lacks {', '.join(missing)}")
    return bin_dir


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(server: str, ca: Path, client: KeyPair, user: str) -> str:
    """A self-contained kubeconfig (certificates embedded), usable by kubectl, Helm and the Python client."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bud-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate-data": _b64(client.cert), "client-key-data": _b64(client.key)}}
        ],
        "contexts": [{"name": "bud-local", "context": {"cluster": "bud-local", "user": user}}],
        "current-context": "bud-local",
    }
    return yaml.safe_dump(config, sort_keys=False)


def _https_ok(url: str, ca: Path) -> Callable[[], bool]:
    context = ssl.create_default_context(cafile=str(ca))

    def check() -> bool:
        try:
            return httpx.get(url, verify=context, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _etcd_healthy(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            response = httpx.get(url, timeout=2.0)
            return response.status_code == 200 and json.loads(response.text).get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    return check


def _http_200(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1, with fake GPU nodes.

    `start()` returns once every node is Ready and the `default` ServiceAccount exists (pods can be created);
    `stop()` stops every process it started, newest first. Everything lives under `state_dir`: pki/, etcd/, logs/,
    kubeconfig.
    """

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path,
        node_pools: Sequence[NodePool] = DEFAULT_NODE_POOLS,
        startup_timeout_s: float = 180.0,
        apiserver_port: int | None = None,
    ):
        self.state_dir = Path(state_dir)
        # None: a free port. `bud dev up --kube` fixes it, so the kubeconfig it registered stays valid across restarts.
        self.apiserver_port = apiserver_port
        self.bin_dir = Path(bin_dir)
        self.node_pools = list(node_pools)
        self.startup_timeout_s = startup_timeout_s
        self.processes: list[ManagedProcess] = []
        self.kubeconfig_path = self.state_dir / "kubeconfig"
        self.server_url = ""
        self._pki: ClusterPki | None = None

    # ---- public surface -------------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> str:
        """The admin kubeconfig as text (what a `kubernetes` cluster registration carries)."""
        return self.kubeconfig_path.read_text()

    def api_client(self) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig_path))

    def node_names(self) -> list[str]:
        return [name for pool in self.node_pools for name in pool.node_names()]

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ---- start-up steps -------------------------------------------------------------------------------------

    def _start(self) -> None:
        missing = [name for name in BINARIES if not (self.bin_dir / name).exists()]
        if missing:
            raise FileNotFoundError(f"{self.bin_dir} lacks {', '.join(missing)}: run scripts/kube/build.sh")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._pki = pki = ensure_pki(self.state_dir / "pki")

        etcd_url = self._launch(self._etcd())
        apiserver_port = self.apiserver_port or free_port()
        self.server_url = f"https://127.0.0.1:{apiserver_port}"
        self._launch(self._apiserver(etcd_url, apiserver_port))

        self.kubeconfig_path.write_text(kubeconfig_text(self.server_url, pki.ca.cert, pki.clients["admin"], "admin"))
        self.kubeconfig_path.chmod(0o600)
        component_configs = {}
        for stem in ("kube-controller-manager", "kube-scheduler"):
            path = self.state_dir / f"{stem}.kubeconfig"
            path.write_text(kubeconfig_text(self.server_url, pki.ca.cert, pki.clients[stem], stem))
            component_configs[stem] = path

        # The three clients of the API server start together; each waits for its own health endpoint.
        followers = [
            self._controller_manager(component_configs["kube-controller-manager"]),
            self._scheduler(component_configs["kube-scheduler"]),
            self._kwok(),
        ]
        for process in followers:
            self.processes.append(process.start())
        for process in followers:
            process.wait_healthy()

        with self.api_client() as api:
            self._register_nodes(k8s.CoreV1Api(api))
            self._wait_until_usable(k8s.CoreV1Api(api))

    def _launch(self, process: ManagedProcess) -> str:
        self.processes.append(process.start())
        process.wait_healthy()
        return process.url

    def _process(self, name: str, argv: list[str], healthy: Callable[[], bool], url: str = "") -> ManagedProcess:
        return ManagedProcess(
            name=name,
            argv=[str(self.bin_dir / name), *argv],
            log_path=self.state_dir / "logs" / f"{name}.log",
            healthy=healthy,
            url=url,
            startup_timeout_s=self.startup_timeout_s,
        )

    def _etcd(self) -> ManagedProcess:
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        argv = [
            "--name=bud-kube",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=bud-kube={peer_url}",
            "--unsafe-no-fsync",  # a throwaway development cluster: durability across power loss is not needed
            "--log-level=warn",
        ]
        return self._process("etcd", argv, _etcd_healthy(f"{client_url}/health"), url=client_url)

    def _apiserver(self, etcd_url: str, port: int) -> ManagedProcess:
        pki = self._pki
        assert pki is not None
        argv = [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.state_dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        return self._process("kube-apiserver", argv, _https_ok(f"https://127.0.0.1:{port}/readyz", pki.ca.cert))

    def _serving_flags(self, kubeconfig: Path) -> tuple[list[str], str]:
        """Flags shared by controller-manager and scheduler: our kubeconfig, our serving cert, a free port."""
        pki = self._pki
        assert pki is not None
        port = free_port()
        flags = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.serving.cert}",
            f"--tls-private-key-file={pki.serving.key}",
            "--leader-elect=false",  # a single instance of each
            "--profiling=false",
        ]
        return flags, f"https://127.0.0.1:{port}/healthz"

    def _controller_manager(self, kubeconfig: Path) -> ManagedProcess:
        pki = self._pki
        assert pki is not None
        flags, health_url = self._serving_flags(kubeconfig)
        argv = [
            *flags,
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
        ]
        return self._process("kube-controller-manager", argv, _https_ok(health_url, pki.ca.cert))

    def _scheduler(self, kubeconfig: Path) -> ManagedProcess:
        assert self._pki is not None
        flags, health_url = self._serving_flags(kubeconfig)
        return self._process("kube-scheduler", flags, _https_ok(health_url, self._pki.ca.cert))

    def _kwok(self) -> ManagedProcess:
        port = free_port()
        key, value = KWOK_NODE_ANNOTATION
        argv = [
            f"--kubeconfig={self.kubeconfig_path}",
            f"--config={KWOK_STAGES}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.1/16",  # pod IPs kwok hands out: addresses only, nothing is ever sent to them
            f"--server-address=127.0.0.1:{port}",
        ]
        return self._process("kwok", argv, _http_200(f"http://127.0.0.1:{port}/healthz"))

    # ---- nodes ----------------------------------------------------------------------------------------------

    def _node_manifest(self, pool: NodePool, name: str) -> dict:
        resources = {"cpu": pool.cpu, "memory": pool.memory, "pods": pool.pods, GPU_RESOURCE: str(pool.gpus_per_node)}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    FAKE_NODE_LABEL: "true",
                    GPU_TYPE_LABEL: pool.gpu_type,
                    GPU_PRODUCT_LABEL: pool.gpu_product,
                    "nvidia.com/gpu.count": str(pool.gpus_per_node),
                },
            },
            # kube-apiserver keeps the status given at creation; kwok's node-initialize stage keeps these figures.
            "status": {"capacity": resources, "allocatable": resources},
        }

    def _register_nodes(self, core: k8s.CoreV1Api) -> None:
        # A reused state folder may hold fake nodes of an earlier, different configuration: drop those.
        wanted = set(self.node_names())
        for node in core.list_node(label_selector=f"{FAKE_NODE_LABEL}=true").items:
            if node.metadata.name not in wanted:
                core.delete_node(node.metadata.name)
        for pool in self.node_pools:
            for name in pool.node_names():
                manifest = self._node_manifest(pool, name)
                try:
                    core.create_node(manifest)
                except ApiException as error:
                    if error.status != 409:
                        raise
                    # A reused state folder: bring the existing node in line with this pool.
                    core.patch_node(name, {"metadata": manifest["metadata"]})
                    core.patch_node_status(name, {"status": manifest["status"]})

    def _wait_until_usable(self, core: k8s.CoreV1Api) -> None:
        """Every node Ready (kwok is working) and the default ServiceAccount made (pods can be admitted)."""
        wanted = set(self.node_names())
        deadline = time.monotonic() + self.startup_timeout_s
        not_ready = wanted
        while time.monotonic() < deadline:
            nodes = core.list_node(label_selector=f"{FAKE_NODE_LABEL}=true").items
            ready = {
                node.metadata.name
                for node in nodes
                if any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
            }
            not_ready = wanted - ready
            default_account = core.list_namespaced_service_account("default", field_selector="metadata.name=default")
            if not not_ready and default_account.items:
                return
            time.sleep(0.3)
        raise StartupError(
            f"cluster not usable after {self.startup_timeout_s:.0f}s; nodes not Ready: {sorted(not_ready)}\n"
            + "\n".join(f"--- {p.name}:\n{p.log_tail(15)}" for p in self.processes)
        )


def parse_node_pool(text: str) -> NodePool:
    """`NAME=COUNTxGPUS:GPU_TYPE`, e.g. `h100=2x8:nvidia-h100-80gb`."""
    try:
        name, rest = text.split("=", 1)
        shape, gpu_type = rest.split(":", 1)
        count, gpus = shape.lower().split("x", 1)
        return NodePool(name=name, count=int(count), gpus_per_node=int(gpus), gpu_type=gpu_type)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=COUNTxGPUS:GPU_TYPE ({error})") from error


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.kube", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up", help="build if needed, start the cluster, print the kubeconfig path, run until Ctrl-C"
    )
    up.add_argument("--state-dir", type=Path, help="default: a new temporary folder")
    up.add_argument("--bin-dir", type=Path, help="default: the output of scripts/kube/build.sh")
    up.add_argument(
        "--node-pool",
        type=parse_node_pool,
        action="append",
        dest="node_pools",
        help="NAME=COUNTxGPUS:GPU_TYPE, repeatable (default: h100=2x8:nvidia-h100-80gb l40s=1x4:nvidia-l40s)",
    )
    commands.add_parser("build", help="build the binaries if needed and print their folder")
    args = parser.parse_args(argv)

    bin_dir = args.bin_dir if args.command == "up" and args.bin_dir else ensure_binaries()
    if args.command == "build":
        print(bin_dir)
        return 0

    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="bud-kube-"))
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.set())
    started = time.monotonic()
    with KubeCluster(state_dir, bin_dir, args.node_pools or DEFAULT_NODE_POOLS) as cluster:
        print(f"cluster ready in {time.monotonic() - started:.1f}s at {cluster.server_url}", file=sys.stderr)
        print(f"logs: {state_dir / 'logs'}   stop: Ctrl-C", file=sys.stderr)
        print(f"export KUBECONFIG={cluster.kubeconfig_path}", file=sys.stderr)
        print(cluster.kubeconfig_path, flush=True)
        while not stop_requested.wait(timeout=1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
