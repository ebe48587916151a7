"""Which workflows and activities each task queue runs. Clients are built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from activities.clusters import ClusterActivities
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from core.settings import Settings
from workflows.register_cluster import RegisterCluster

CONTROL_WORKFLOWS: list[type] = [RegisterCluster]
OPTIMIZER_WORKFLOWS: list[type] = []
ALL_WORKFLOWS = CONTROL_WORKFLOWS + OPTIMIZER_WORKFLOWS


@dataclass
class QueueSetup:
    workflows: list[type]
    activities: list[Any] = field(default_factory=list)


def control_queue(settings: Settings, pool: asyncpg.Pool) -> QueueSetup:
    clusters = ClusterActivities(pool, LocalBackend(settings.state_dir), KubernetesBackend())
    return QueueSetup(
        workflows=CONTROL_WORKFLOWS,
        activities=[clusters.probe_cluster, clusters.set_cluster_status],
    )


def optimizer_queue(settings: Settings, pool: asyncpg.Pool) -> QueueSetup:
    return QueueSetup(workflows=OPTIMIZER_WORKFLOWS, activities=[])


def setup_for(queue: str, settings: Settings, pool: asyncpg.Pool) -> QueueSetup:
    if queue == settings.control_queue:
        return control_queue(settings, pool)
    if queue == settings.optimizer_queue:
        return optimizer_queue(settings, pool)
    raise SystemExit(f"unknown task queue {queue!r}; use {settings.control_queue} or {settings.optimizer_queue}")
