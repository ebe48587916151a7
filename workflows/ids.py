"""Workflow ids derive from resource ids, so starting the same work twice finds the first run."""

from uuid import UUID


def register_cluster_workflow_id(cluster_id: UUID) -> str:
    return f"register-cluster-{cluster_id}"


def register_model_workflow_id(model_id: UUID) -> str:
    return f"register-model-{model_id}"


def deploy_endpoint_workflow_id(endpoint_id: UUID) -> str:
    return f"deploy-endpoint-{endpoint_id}"


def delete_endpoint_workflow_id(endpoint_id: UUID) -> str:
    return f"delete-endpoint-{endpoint_id}"


def scale_endpoint_workflow_id(endpoint_id: UUID) -> str:
    return f"scale-endpoint-{endpoint_id}"


def optimize_workflow_id(endpoint_id: UUID, request_id: str) -> str:
    return f"optimize-{endpoint_id}-{request_id}"


def transfer_workflow_id(endpoint_id: UUID) -> str:
    return f"transfer-model-{endpoint_id}"


def health_check_workflow_id(endpoint_id: UUID) -> str:
    return f"health-check-{endpoint_id}"


def autoscale_endpoint_workflow_id(endpoint_id: UUID) -> str:
    return f"autoscale-endpoint-{endpoint_id}"


def traffic_shift_workflow_id(route_name: str) -> str:
    return f"traffic-shift-{route_name}"


def reoptimize_endpoint_workflow_id(endpoint_id: UUID) -> str:
    return f"reoptimize-endpoint-{endpoint_id}"


def benchmark_endpoint_workflow_id(run_id: UUID) -> str:
    return f"benchmark-endpoint-{run_id}"
