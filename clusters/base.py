"""The protocol every cluster backend implements (local processes, Kubernetes + Helm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from control.payloads.clusters import ClusterFacts, ClusterSpec
from control.payloads.deployments import DeploymentSpec, DeploymentState

Heartbeat = Callable[..., None]


class ClusterUnreachable(Exception):
    """The cluster did not answer (transient: the activity retries)."""


class DeploymentFailed(Exception):
    """The release cannot become ready (permanent): the message is the reason shown to the user,
    e.g. "0/3 nodes are available: 3 Insufficient nvidia.com/gpu" or "model failed to load: ..."."""


class ClusterBackend(Protocol):
    async def probe(self, spec: ClusterSpec, heartbeat: Heartbeat) -> ClusterFacts:
        """Look at the cluster: nodes, GPUs, whether replicas can start."""
        ...

    async def apply(self, spec: DeploymentSpec, heartbeat: Heartbeat) -> DeploymentState:
        """Create or update the release to match spec (idempotent: applying twice changes nothing)."""
        ...

    async def wait_ready(self, spec: DeploymentSpec, timeout_s: float, heartbeat: Heartbeat) -> DeploymentState:
        """Wait until every replica is ready; raise DeploymentFailed with the reason when it cannot happen."""
        ...

    async def state(self, spec: DeploymentSpec) -> DeploymentState:
        ...

    def leaving(self, spec: DeploymentSpec, deleting: bool) -> list[tuple[str, str]]:
        """(name, url) of the routed replicas that applying `spec` (or deleting its release) will stop: they are
        drained first (out of the route, in-flight requests finished) by clusters.drain."""
        ...

    async def delete(self, spec: DeploymentSpec, heartbeat: Heartbeat) -> None:
        """Remove everything the release created (idempotent: deleting a missing release succeeds)."""
        ...
