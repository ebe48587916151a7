"""The protocol every cluster backend implements (local processes, Kubernetes + Helm)."""

from __future__ import annotations

from typing import Protocol

from core.payloads.clusters import ClusterFacts, ClusterSpec


class ClusterUnreachable(Exception):
    """The cluster did not answer (transient: the activity retries)."""


class ClusterBackend(Protocol):
    async def probe(self, spec: ClusterSpec, heartbeat) -> ClusterFacts:
        """Look at the cluster: nodes, GPUs, whether replicas can start. `heartbeat()` is called while waiting."""
        ...
