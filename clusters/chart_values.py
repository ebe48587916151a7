"""charts/bud-runtime's values for a DeploymentSpec: the one place the deployment config becomes Helm values.

The chart's values.schema.json checks the result; tests/test_chart.py renders it with `helm template`.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field

from control.payloads.autoscaling import QUEUE_DEPTH_METRIC, AutoscalingSpec
from control.payloads.deployments import DeploymentSpec

DEFAULT_DRAIN_TIMEOUT_S = 30  # the chart's own default, for a spec that names none
CHART_DIR = Path(__file__).resolve().parent.parent / "charts" / "bud-runtime"


class S3Source(BaseModel):
    """The S3-compatible store the model-transfer init container copies from, as the cluster's pods reach it."""

    endpoint_url: str = Field(default="", description="e.g. http://s3.storage.svc:9000; empty: AWS S3")
    access_key_id: str = ""
    secret_access_key: str = ""
    existing_secret: str = Field(default="", description="a Secret in the release namespace holding the keys instead")
    region: str = "us-east-1"


class ModelCache(BaseModel):
    """Where replicas keep the weights: a PVC per release (shared by its replicas), an existing claim, or none."""

    enabled: bool = True
    existing_claim: str = ""
    storage_class: str | None = Field(default=None, description="None: the cluster's default StorageClass")
    size: str = "200Gi"
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]] = Field(
        default_factory=lambda: ["ReadWriteMany"]
    )


def parse_s3_uri(uri: str) -> tuple[str, str] | None:
    """`s3://bucket/prefix` -> (bucket, prefix); None for anything else (a path the runtime loads as is)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        return None
    return parsed.netloc, parsed.path.strip("/")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A copy of base with extra merged in (nested dicts merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _model_values(spec: DeploymentSpec, s3: S3Source | None, cache: ModelCache) -> dict[str, Any]:
    cache_values: dict[str, Any] = {
        "enabled": cache.enabled,
        "existingClaim": cache.existing_claim,
        "storageClassName": cache.storage_class,
        "size": cache.size,
        "accessModes": list(cache.access_modes),
    }
    location = parse_s3_uri(spec.model_uri)
    if location is None:
        return {"id": str(spec.model_id), "path": spec.model_uri, "s3": {"enabled": False}, "cache": cache_values}
    bucket, prefix = location
    source = s3 or S3Source()
    return {
        "id": str(spec.model_id),
        "s3": {
            "enabled": True,
            "endpoint": source.endpoint_url,
            "bucket": bucket,
            "prefix": prefix,
            "region": source.region,
            "credentials": {
                "existingSecret": source.existing_secret,
                "accessKeyId": source.access_key_id,
                "secretAccessKey": source.secret_access_key,
            },
        },
        # Registry paths are relative to the model's prefix; the copy is verified file by file against these.
        "sha256": {path.removeprefix("./"): digest.lower() for path, digest in sorted(spec.model_sha256.items())},
        "cache": cache_values,
    }


def _autoscaling_values(scaling: AutoscalingSpec | None) -> dict[str, Any]:
    """The chart's `autoscaling` block from the endpoint's autoscaling spec: an HPA when enabled. None or disabled
    gives enabled: false, so a re-apply removes an HPA an earlier revision made and the Deployment gets `replicas`
    back.

    The chart's HPA takes one cpu and one queue-depth metric: the first of each in `scaling.metrics` is used (the
    queue-depth metric's own selector is replaced by the chart's `bud.ai/release=<release>`).
    """
    if scaling is None or not scaling.enabled:
        return {"enabled": False}
    cpu = next((m.resource for m in scaling.metrics if m.type == "Resource" and m.resource is not None), None)
    queue = next((m.external for m in scaling.metrics if m.type == "External" and m.external is not None), None)
    queue_depth: dict[str, Any] = {"enabled": queue is not None, "metricName": QUEUE_DEPTH_METRIC}
    if queue is not None:
        target = queue.target
        figure = target.value if target.type == "Value" else target.averageValue
        queue_depth["targetType"] = target.type
        queue_depth["targetValue"] = int(figure) if float(figure).is_integer() else figure
    return {
        "enabled": True,
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "targetCPUUtilizationPercentage": cpu.target.averageUtilization if cpu is not None else None,
        "queueDepth": queue_depth,
        "behavior": scaling.behavior.model_dump(exclude_none=True) if scaling.behavior else {},
    }


def chart_values(
    spec: DeploymentSpec,
    *,
    s3: S3Source | None = None,
    cache: ModelCache | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The values file for `helm upgrade --install spec.release charts/bud-runtime`.

    `extra` is merged last: cluster-wide settings the spec does not carry (image mirrors, ingress, ServiceMonitor).
    The HPA comes from `spec.autoscaling` (`autoscaling.enabled: false` when it has none); an `extra` autoscaling
    block still overrides it key by key.
    """
    config = spec.config
    values: dict[str, Any] = {
        "endpointId": str(spec.endpoint_id),
        "servedModelName": spec.served_model_name,
        "runtime": spec.runtime,
        "replicaCount": spec.replicas,
        "engine": {
            "tensorParallelSize": config.tensor_parallel_size,
            "pipelineParallelSize": config.pipeline_parallel_size,
            "maxModelLen": config.max_model_len,
            "maxNumSeqs": config.max_num_seqs,
            "gpuMemoryUtilization": config.gpu_memory_utilization,
            "maxNumBatchedTokens": config.max_num_batched_tokens,
        },
        "resources": {
            "gpuType": spec.resources.gpu_type,
            "gpuCount": spec.resources.gpu_count,
            "cpuCores": spec.resources.cpu_cores,
            "memoryGb": spec.resources.memory_gb,
        },
        "model": _model_values(spec, s3, cache or ModelCache()),
        "probes": {"startupTimeoutSeconds": max(1, math.ceil(spec.startup_timeout_s))},
        "drain": {"timeoutSeconds": max(1, math.ceil(spec.drain_timeout_s or DEFAULT_DRAIN_TIMEOUT_S))},
        "labels": dict(spec.labels),
        "autoscaling": _autoscaling_values(spec.autoscaling),
    }
    return deep_merge(values, extra or {})
