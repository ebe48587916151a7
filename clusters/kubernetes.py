"""The Kubernetes backend: talks to the API server with the cluster's kubeconfig, and deploys with Helm.

Each release (an endpoint, or one color of it) is one `helm upgrade --install` of charts/bud-runtime with values
rendered from the DeploymentSpec (clusters/chart_values.py): the Helm release's values are the single source of truth,
scaling included. Reads (Deployment, pods, events) go through the Python client in threads; helm runs as an asyncio
subprocess (clusters/helm.py). Rollout progress and Pending explanations come from clusters/rollout.py.

    backend = KubernetesBackend(kubeconfig_text, s3=S3Source(endpoint_url="http://s3.storage:9000", ...))
    await backend.apply(spec, heartbeat)
    await backend.wait_ready(spec, timeout_s=900, heartbeat=heartbeat)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from clusters import rollout
from clusters.base import ClusterUnreachable, DeploymentFailed, Heartbeat
from clusters.chart_values import CHART_DIR, DEFAULT_DRAIN_TIMEOUT_S, ModelCache, S3Source, chart_values
from clusters.helm import Helm
from core.gpu_types import canonical_gpu_type, gpu_type_from_product
from control.payloads.clusters import ClusterFacts, ClusterSpec
from control.payloads.deployments import DeploymentSpec, DeploymentState
from core.settings import Settings

GPU_RESOURCE = "nvidia.com/gpu"
# Labels that name a node's GPU type: ours first, then the NVIDIA GPU feature discovery one.
GPU_TYPE_LABELS = ("bud.ai/gpu-type", "nvidia.com/gpu.product")


class InventoryMismatch(Exception):
    """The declared GPUs are not in the cluster (permanent until the user fixes the spec)."""


def api_client(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config_from_dict(yaml.safe_load(kubeconfig), client_configuration=configuration)
    configuration.retries = 0  # Temporal's retry policy decides when to try again, with backoff and a limit
    return k8s.ApiClient(configuration)


def node_gpu_type(labels: dict[str, str]) -> str | None:
    """The node's canonical GPU type from its labels: a catalog name or alias, or an NVIDIA product name."""
    for label in GPU_TYPE_LABELS:
        value = labels.get(label)
        if value:
            try:
                return canonical_gpu_type(value)
            except ValueError:
                if gpu_type := gpu_type_from_product(value):
                    return gpu_type
    return None


def count_gpus(nodes: list) -> tuple[Counter, int]:
    observed: Counter = Counter()
    for node in nodes:
        allocatable = (node.status.allocatable or {}) if node.status else {}
        gpus = int(allocatable.get(GPU_RESOURCE, "0") or 0)
        gpu_type = node_gpu_type(node.metadata.labels or {})
        if gpus and gpu_type:
            observed[gpu_type] += gpus
    return observed, len(nodes)


def _root_cause(error: BaseException) -> str:
    """urllib3 nests the useful part ('Connection refused') several causes deep."""
    seen = error
    while getattr(seen, "reason", None) is not None and isinstance(seen.reason, BaseException):
        seen = seen.reason
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__
    return f"{type(seen).__name__}: {seen}"


T = TypeVar("T")

SERVICE_PORT = 8000  # the chart's service.port
INSTANCE_LABEL = "app.kubernetes.io/instance"
RELEASE_LABEL = "bud.ai/release"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def _no_heartbeat(*_details: object) -> None:
    return None


def _api_error(error: ApiException, what: str) -> Exception:
    if error.status in (401, 403):
        return DeploymentFailed(f"{what}: the cluster refused our credentials (HTTP {error.status} {error.reason})")
    return ClusterUnreachable(f"{what}: HTTP {error.status} {error.reason}")


class KubernetesBackend:
    """The ClusterBackend for `kubernetes` clusters (see clusters/base.py for the protocol).

    `kubeconfig` is needed for everything but probe() (which takes it from the ClusterSpec); a worker holds one
    backend and calls `with_kubeconfig(cluster.kubeconfig)` per cluster. `s3` tells the model-transfer init container
    where the registry's objects are (as the cluster's pods reach them); `model_cache` where the weights are kept;
    `extra_values` are merged into every release's values (image mirrors, ingress, ServiceMonitor, autoscaling).
    A pod the scheduler cannot place for `unschedulable_grace_s` fails the rollout with the scheduler's reason
    (`volume_grace_s` while its model-cache claim is still unbound; no limit while a node autoscaler adds a node).
    """

    def __init__(
        self,
        kubeconfig: str | None = None,
        *,
        helm: str | None = None,
        chart: Path = CHART_DIR,
        s3: S3Source | None = None,
        model_cache: ModelCache | None = None,
        extra_values: dict[str, Any] | None = None,
        settings: Settings | None = None,
        unschedulable_grace_s: float = 30.0,
        volume_grace_s: float = 300.0,
        poll_interval_s: float = 1.0,
        delete_timeout_s: float = 180.0,
    ):
        self.kubeconfig = kubeconfig
        self.helm_binary = helm
        self.chart = Path(chart)
        if s3 is None and settings is not None:
            # The registry's store as the cluster's pods reach it (BUD_S3_ENDPOINT_FOR_PODS), not as this process does.
            s3 = S3Source(endpoint_url=settings.pod_s3_endpoint, access_key_id=settings.s3_access_key,
                          secret_access_key=settings.s3_secret_key, region=settings.s3_region)
        self.s3 = s3
        self.model_cache = model_cache or ModelCache()
        self.extra_values = extra_values or {}
        self.unschedulable_grace_s = unschedulable_grace_s
        self.volume_grace_s = volume_grace_s
        self.poll_interval_s = poll_interval_s
        self.delete_timeout_s = delete_timeout_s
        self._helm: Helm | None = None

    def with_kubeconfig(self, kubeconfig: str) -> KubernetesBackend:
        """The same settings, for another cluster."""
        return KubernetesBackend(
            kubeconfig,
            helm=self.helm_binary,
            chart=self.chart,
            s3=self.s3,
            model_cache=self.model_cache,
            extra_values=self.extra_values,
            unschedulable_grace_s=self.unschedulable_grace_s,
            volume_grace_s=self.volume_grace_s,
            poll_interval_s=self.poll_interval_s,
            delete_timeout_s=self.delete_timeout_s,
        )

    # ---- what a release is ----------------------------------------------------------------------------------

    def values(self, spec: DeploymentSpec, cache: ModelCache | None = None) -> dict[str, Any]:
        """The chart values for spec (what `helm get values` shows afterwards)."""
        return chart_values(spec, s3=self.s3, cache=cache or self.model_cache, extra=self.extra_values)

    async def _model_cache_for_cluster(self) -> ModelCache:
        """The configured cache, except that a claim asking for the default StorageClass on a cluster that has none
        would never bind (its pods would stay Pending forever): there each pod copies into its own emptyDir."""
        cache = self.model_cache
        if not cache.enabled or cache.existing_claim or cache.storage_class is not None:
            return cache

        def has_default_class(api: k8s.ApiClient) -> bool:
            try:
                classes = k8s.StorageV1Api(api).list_storage_class(_request_timeout=10).items
            except ApiException as error:
                if error.status == 403:  # may not look: trust the cluster to provision the claim
                    return True
                raise
            return any(
                (c.metadata.annotations or {}).get(DEFAULT_CLASS_ANNOTATION) == "true" for c in classes
            )

        if await self._kube(has_default_class, "cannot list storage classes"):
            return cache
        return cache.model_copy(update={"enabled": False})

    @staticmethod
    def service_url(spec: DeploymentSpec) -> str:
        """The release's Service inside the cluster (the chart names every object after the release)."""
        return f"http://{spec.release}.{spec.namespace}.svc:{SERVICE_PORT}"

    def leaving(self, spec: DeploymentSpec, deleting: bool) -> list[tuple[str, str]]:
        """The Service leaves the route before `helm uninstall`; a scale-down's pods drain themselves (the chart's
        preStop hook, a readiness probe that fails while draining, terminationGracePeriodSeconds)."""
        return [(spec.release, self.service_url(spec))] if deleting else []

    @property
    def helm(self) -> Helm:
        if self._helm is None:  # found on first use, so a worker without helm still serves local clusters
            self._helm = Helm(self.helm_binary)
        return self._helm

    def _require_kubeconfig(self) -> str:
        if not self.kubeconfig:
            raise ValueError("this KubernetesBackend has no kubeconfig: use with_kubeconfig(cluster.kubeconfig)")
        return self.kubeconfig

    async def _kube(self, call: Callable[[k8s.ApiClient], T], what: str) -> T:
        """Run a blocking client call in a thread, with its own ApiClient; connection problems -> ClusterUnreachable."""
        kubeconfig = self._require_kubeconfig()

        def run() -> T:
            with api_client(kubeconfig) as api:
                return call(api)

        try:
            return await asyncio.to_thread(run)
        except ApiException as error:
            raise _api_error(error, what) from error
        except (Urllib3HTTPError, OSError) as error:
            raise ClusterUnreachable(f"{what}: {_root_cause(error)}") from error

    async def probe(self, spec: ClusterSpec, heartbeat) -> ClusterFacts:
        assert spec.kubeconfig, "kubernetes clusters carry a kubeconfig (validated by the API)"

        def list_nodes():
            with api_client(spec.kubeconfig) as api:
                return k8s.CoreV1Api(api).list_node(_request_timeout=10).items

        try:
            nodes = await asyncio.to_thread(list_nodes)
        except ApiException as error:
            raise ClusterUnreachable(f"cannot list nodes: HTTP {error.status} {error.reason}") from error
        except (Urllib3HTTPError, OSError) as error:
            raise ClusterUnreachable(f"cannot list nodes: {_root_cause(error)}") from error
        heartbeat()
        observed, node_count = count_gpus(nodes)
        short = [
            f"declared {pool.count} {pool.gpu_type} but the cluster's nodes offer {observed.get(pool.gpu_type, 0)}"
            for pool in spec.gpus
            if observed.get(pool.gpu_type, 0) < pool.count
        ]
        if short:
            raise InventoryMismatch("; ".join(short))
        return ClusterFacts(simulated_gpus=False, nodes=node_count, observed_gpus=dict(observed))

    # ---- ClusterBackend ---------------------------------------------------------------------------------------

    async def apply(self, spec: DeploymentSpec, heartbeat: Heartbeat = _no_heartbeat) -> DeploymentState:
        """`helm upgrade --install` the release. Applying values that are already deployed changes nothing (not even
        the Helm revision); a release left half-done by a killed helm is recovered first."""
        kubeconfig = self._require_kubeconfig()
        values = self.values(spec, await self._model_cache_for_cluster())
        status = await self.helm.status(spec.release, spec.namespace, kubeconfig)
        heartbeat()
        if status is not None:
            phase = status["info"]["status"]
            if phase.startswith("pending-"):
                await self._recover_pending(spec, phase, kubeconfig)
                heartbeat()
            elif phase == "deployed" and await self._already_deployed(spec, values, kubeconfig):
                return await self.state(spec)
        await self.helm.upgrade_install(spec.release, self.chart, spec.namespace, values, kubeconfig)
        heartbeat()
        return await self.state(spec)

    async def scale(self, spec: DeploymentSpec, replicas: int, heartbeat: Heartbeat = _no_heartbeat) -> DeploymentState:
        """Set the replica count through the release's values (so a later apply does not undo it)."""
        return await self.apply(spec.model_copy(update={"replicas": replicas}), heartbeat)

    async def wait_ready(
        self, spec: DeploymentSpec, timeout_s: float, heartbeat: Heartbeat = _no_heartbeat
    ) -> DeploymentState:
        """Watch the Deployment until every replica is updated and available. Raises DeploymentFailed with the
        reason when a pod cannot be scheduled for unschedulable_grace_s, a container is stuck (CrashLoopBackOff,
        ImagePullBackOff, ...), the Deployment reports a failure, or timeout_s passes."""
        deadline = time.monotonic() + timeout_s
        unschedulable_since: dict[str, float] = {}  # pod uid -> when we first saw the scheduler refuse it
        while True:
            observation = await self._observe(spec)
            heartbeat()
            deployment = observation.deployment
            if deployment is None:
                raise DeploymentFailed(f"release {spec.release} has no Deployment in namespace {spec.namespace}")
            if rollout.rolled_out(deployment):
                return rollout.deployment_state(spec.release, observation, SERVICE_PORT, spec.replicas)

            failure = rollout.deployment_failure(deployment)
            now = time.monotonic()
            for pod in observation.live_pods:
                failure = failure or rollout.pod_failure(pod)
                message = rollout.unschedulable_message(pod, observation.scheduling_events)
                if message is None or rollout.scale_up_triggered(pod, observation.scheduling_events):
                    unschedulable_since.pop(pod.metadata.uid, None)  # placed, or a node autoscaler adds a node
                    continue
                first_seen = unschedulable_since.setdefault(pod.metadata.uid, now)
                # A claim being provisioned also keeps pods unschedulable for a while: give storage longer.
                grace = self.volume_grace_s if rollout.waiting_for_volume(message) else self.unschedulable_grace_s
                if not failure and now - first_seen >= grace:
                    failure = f"pod {pod.metadata.name} cannot be scheduled: {message}"
            if failure:
                raise DeploymentFailed(failure)
            if now >= deadline:
                state = rollout.deployment_state(spec.release, observation, SERVICE_PORT, spec.replicas)
                reasons = "; ".join(state.pending_reasons) or "replicas are starting (model copy and load)"
                raise DeploymentFailed(
                    f"not ready after {timeout_s:.0f}s: {state.ready_replicas}/{state.desired_replicas} replicas "
                    f"ready; {reasons}"
                )
            await asyncio.sleep(self.poll_interval_s)

    async def state(self, spec: DeploymentSpec) -> DeploymentState:
        observation = await self._observe(spec)
        state = rollout.deployment_state(spec.release, observation, SERVICE_PORT, spec.replicas)
        nodes = {replica.node for replica in state.replicas if replica.node}
        fake = await self._fake_nodes() if nodes else set()
        return state.model_copy(update={"service_url": self.service_url(spec) if state.exists else None,
                                        "simulated_nodes": bool(nodes) and nodes <= fake})

    async def _fake_nodes(self) -> set[str]:
        """Nodes kwok simulates (label bud.ai/fake-node=true): pods there are Ready but run no container."""
        kubeconfig = self._require_kubeconfig()

        def list_fake() -> set[str]:
            with api_client(kubeconfig) as api:
                items = k8s.CoreV1Api(api).list_node(label_selector="bud.ai/fake-node=true", _request_timeout=10).items
            return {node.metadata.name for node in items}

        return await asyncio.to_thread(list_fake)

    async def delete(
        self, spec: DeploymentSpec, heartbeat: Heartbeat = _no_heartbeat, *, keep_model_cache: bool = False
    ) -> None:
        """`helm uninstall`, wait until the release's pods are gone, and delete the model cache PVC the chart made
        (which Helm keeps on purpose) unless keep_model_cache. Deleting a missing release succeeds."""
        kubeconfig = self._require_kubeconfig()
        await self.helm.uninstall(spec.release, spec.namespace, kubeconfig, wait_s=int(self.delete_timeout_s))
        heartbeat()
        # Terminating pods drain first (preStop sleep, in-flight requests, margin: the chart's grace period).
        drain_s = 5 + (spec.drain_timeout_s or DEFAULT_DRAIN_TIMEOUT_S) + 10
        deadline = time.monotonic() + self.delete_timeout_s + drain_s
        while (observation := await self._observe(spec)).pods or observation.deployment is not None:
            heartbeat()
            if time.monotonic() >= deadline:
                names = ", ".join(pod.metadata.name for pod in observation.pods)
                raise TimeoutError(f"release {spec.release} uninstalled but pods are still terminating: {names}")
            await asyncio.sleep(self.poll_interval_s)
        if not keep_model_cache:
            await self._delete_model_cache(spec, heartbeat)
        heartbeat()

    # ---- helpers ------------------------------------------------------------------------------------------------

    async def _already_deployed(self, spec: DeploymentSpec, values: dict[str, Any], kubeconfig: str) -> bool:
        """The deployed manifests equal what these values render to, and the Deployment is still there."""
        deployed = await self.helm.manifest(spec.release, spec.namespace, kubeconfig)
        wanted = await self.helm.template(spec.release, self.chart, spec.namespace, values)
        if deployed.strip() != wanted.strip():
            return False
        return (await self._observe(spec)).deployment is not None

    async def _recover_pending(self, spec: DeploymentSpec, phase: str, kubeconfig: str) -> None:
        """A helm killed mid-operation (with its worker) leaves the release pending-*, which blocks every later
        upgrade. Operations on one release are serialized by its workflow, so nothing else is running: undo it."""
        if phase == "pending-install":
            await self.helm.uninstall(spec.release, spec.namespace, kubeconfig, wait_s=int(self.delete_timeout_s))
        else:  # pending-upgrade or pending-rollback: back to the last good revision, then upgrade again
            await self.helm.rollback(spec.release, spec.namespace, kubeconfig)

    async def _observe(self, spec: DeploymentSpec) -> rollout.Observation:
        def look(api: k8s.ApiClient) -> rollout.Observation:
            apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
            try:
                deployment = apps.read_namespaced_deployment(spec.release, spec.namespace, _request_timeout=10)
            except ApiException as error:
                if error.status != 404:
                    raise
                deployment = None
            pods = core.list_namespaced_pod(
                spec.namespace, label_selector=f"{INSTANCE_LABEL}={spec.release}", _request_timeout=10
            ).items
            events = []
            if any(not pod.spec.node_name for pod in pods):
                for reason in rollout.SCHEDULING_EVENT_REASONS:
                    events += core.list_namespaced_event(
                        spec.namespace, field_selector=f"reason={reason}", _request_timeout=10
                    ).items
            return rollout.Observation(deployment=deployment, pods=pods, scheduling_events=events)

        return await self._kube(look, f"cannot read release {spec.release}")

    async def _delete_model_cache(self, spec: DeploymentSpec, heartbeat: Heartbeat) -> None:
        """Delete the claims the chart created for this release (labelled with it; an existing claim it was given
        is not) and wait until they are gone (the pvc-protection finalizer holds them while a pod still uses them)."""
        selector = f"{INSTANCE_LABEL}={spec.release},{RELEASE_LABEL}={spec.release}"

        def delete_remaining(api: k8s.ApiClient) -> list[str]:
            core = k8s.CoreV1Api(api)
            claims = core.list_namespaced_persistent_volume_claim(spec.namespace, label_selector=selector).items
            for claim in claims:
                if claim.metadata.deletion_timestamp is None:
                    try:
                        core.delete_namespaced_persistent_volume_claim(claim.metadata.name, spec.namespace)
                    except ApiException as error:
                        if error.status != 404:
                            raise
            return [claim.metadata.name for claim in claims]

        deadline = time.monotonic() + self.delete_timeout_s
        while remaining := await self._kube(delete_remaining, f"cannot delete the model cache of {spec.release}"):
            heartbeat()
            if time.monotonic() >= deadline:
                raise TimeoutError(f"model cache claims of {spec.release} are still being deleted: {remaining}")
            await asyncio.sleep(self.poll_interval_s)
