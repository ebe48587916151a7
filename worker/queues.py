"""Which workflows and activities each task queue runs, wired to the clients built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activities.clusters import ClusterActivities
from activities.model_records import ModelRecordActivities
from activities.object_store import ObjectStoreActivities
from activities.scanning import ScanningActivities
from clusters.kubernetes import KubernetesBackend
from clusters.local import LocalBackend
from worker.clients import Clients
from workflows.register_cluster import RegisterCluster
from workflows.register_model import RegisterModel

CONTROL_WORKFLOWS: list[type] = [RegisterCluster, RegisterModel]
OPTIMIZER_WORKFLOWS: list[type] = []
ALL_WORKFLOWS = CONTROL_WORKFLOWS + OPTIMIZER_WORKFLOWS


@dataclass
class QueueSetup:
    workflows: list[type]
    activities: list[Any] = field(default_factory=list)


def control_queue(clients: Clients) -> QueueSetup:
    clusters = ClusterActivities(clients.pool, LocalBackend(clients.settings.state_dir), KubernetesBackend())
    objects = ObjectStoreActivities(clients.store)
    scanning = ScanningActivities(clients.store, clients.clamd)
    records = ModelRecordActivities(clients.pool)
    return QueueSetup(
        workflows=CONTROL_WORKFLOWS,
        activities=[
            clusters.probe_cluster, clusters.set_cluster_status,
            objects.list_model_objects, objects.checksum_object, objects.quarantine_objects,
            scanning.clamav_scan_object, scanning.pickle_scan_object, scanning.safetensors_check_object,
            scanning.analyze_model_config,
            records.record_model_scan,
        ],
    )


def optimizer_queue(clients: Clients) -> QueueSetup:
    return QueueSetup(workflows=OPTIMIZER_WORKFLOWS, activities=[])


def setup_for(queue: str, clients: Clients) -> QueueSetup:
    settings = clients.settings
    if queue == settings.control_queue:
        return control_queue(clients)
    if queue == settings.optimizer_queue:
        return optimizer_queue(clients)
    raise SystemExit(f"unknown task queue {queue!r}; use {settings.control_queue} or {settings.optimizer_queue}")
