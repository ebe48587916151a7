"""Which workflows and activities each task queue runs, wired to the clients built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activities.autoscaling import AutoscalingActivities
from activities.benchmark import BenchmarkActivities
from activities.clusters import ClusterActivities
from activities.endpoints import EndpointActivities
from activities.health import HealthActivities
from activities.model_records import ModelRecordActivities
from activities.monitoring import MonitoringActivities
from activities.object_store import ObjectStoreActivities
from activities.optimizer import OptimizerActivities
from activities.releases import ReleaseActivities
from activities.scanning import ScanningActivities
from activities.traffic import TrafficActivities
from activities.transfer import TransferActivities
from activities.workflow_control import WorkflowControlActivities
from worker.clients import Clients
from workflows.autoscale_endpoint import AutoscaleEndpoint
from workflows.benchmark_endpoint import BenchmarkEndpoint
from workflows.deploy_endpoint import DeployEndpoint
from workflows.health_check import HealthCheck
from workflows.manage_endpoint import DeleteEndpoint, ScaleEndpoint
from workflows.optimize_deployment import OptimizeDeployment
from workflows.register_cluster import RegisterCluster
from workflows.register_model import RegisterModel
from workflows.reoptimize import Reoptimize
from workflows.rolling_update import RollingUpdate
from workflows.traffic_shift import TrafficShift
from workflows.transfer_model import TransferModel

CONTROL_WORKFLOWS: list[type] = [RegisterCluster, RegisterModel, DeployEndpoint, TransferModel, HealthCheck,
                                 ScaleEndpoint, DeleteEndpoint, AutoscaleEndpoint, TrafficShift,
                                 Reoptimize, BenchmarkEndpoint, RollingUpdate]
OPTIMIZER_WORKFLOWS: list[type] = [OptimizeDeployment]
ALL_WORKFLOWS = CONTROL_WORKFLOWS + OPTIMIZER_WORKFLOWS


@dataclass
class QueueSetup:
    workflows: list[type]
    activities: list[Any] = field(default_factory=list)


def activity_methods(instance: object) -> list[Any]:
    """Every @activity.defn method of an activity class instance."""
    return [getattr(instance, name) for name in dir(type(instance))
            if not name.startswith("_") and hasattr(getattr(type(instance), name), "__temporal_activity_definition")]


def control_queue(clients: Clients) -> QueueSetup:
    settings = clients.settings
    instances = [
        ClusterActivities(clients.pool, clients.backends),
        ObjectStoreActivities(clients.store),
        ScanningActivities(clients.store, clients.clamd),
        ModelRecordActivities(clients.pool),
        EndpointActivities(clients.pool, settings),
        ReleaseActivities(clients.pool, clients.backends, settings.drain_timeout_s),
        TransferActivities(clients.store, settings.state_dir / "model-cache"),
        HealthActivities(clients.http),
        WorkflowControlActivities(clients.temporal),
        AutoscalingActivities(clients.pool, clients.backends, clients.http),
        TrafficActivities(clients.pool, clients.http),
        MonitoringActivities(clients.pool, clients.http, settings),
        BenchmarkActivities(clients.pool, clients.http, settings),
    ]
    return QueueSetup(workflows=CONTROL_WORKFLOWS, activities=[m for i in instances for m in activity_methods(i)])


def optimizer_queue(clients: Clients) -> QueueSetup:
    return QueueSetup(workflows=OPTIMIZER_WORKFLOWS, activities=activity_methods(OptimizerActivities(clients.pool)))


def setup_for(queue: str, clients: Clients) -> QueueSetup:
    settings = clients.settings
    if queue == settings.control_queue:
        return control_queue(clients)
    if queue == settings.optimizer_queue:
        return optimizer_queue(clients)
    raise SystemExit(f"unknown task queue {queue!r}; use {settings.control_queue} or {settings.optimizer_queue}")
