"""Workflow ids derive from resource ids, so starting the same work twice finds the first run."""

from uuid import UUID


def register_cluster_workflow_id(cluster_id: UUID) -> str:
    return f"register-cluster-{cluster_id}"


def register_model_workflow_id(model_id: UUID) -> str:
    return f"register-model-{model_id}"
