"""Payloads of the deployment pipeline: what a cluster backend is asked to run, and what it reports back."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from budsim.schemas import TARGET_MAX, TARGET_MIN
from control.payloads.autoscaling import AutoscalingSpec
from control.payloads.common import GpuTypeName, RequestBody

Runtime = Literal["vllm", "sglang", "tensorrt-llm"]
# REGRESSOR and HEURISTIC search automatically (the predictor-driven NSGA-II, or rules); MANUAL takes the given config.
OptimizationMethod = Literal["REGRESSOR", "HEURISTIC", "MANUAL"]


class EndpointStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    UPDATING = "UPDATING"  # serving while a rolling update replaces its replicas
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"


class RuntimeConfig(RequestBody):
    """The runtime's engine parameters."""

    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    max_model_len: int | None = Field(default=None, ge=16, le=10_000_000, description="default: the model's context")
    max_num_seqs: int = Field(default=256, ge=1, le=65_536)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=0.99)
    max_num_batched_tokens: int | None = Field(default=None, ge=16, le=10_000_000)


class Resources(RequestBody):
    """Resource requests, per replica."""

    gpu_type: GpuTypeName
    gpu_count: int = Field(ge=1, le=64)
    cpu_cores: float | None = Field(default=None, gt=0, le=1024)
    memory_gb: float | None = Field(default=None, gt=0, le=16_384)


class SimulatedTiming(BaseModel):
    """How the simulated runtime times tokens (a lone request; each token slows by up to batch_tpot_factor as the
    batch fills), and what that speed stands for."""

    ttft_ms: float = Field(ge=0)
    tpot_ms: float = Field(ge=0)
    batch_tpot_factor: float = Field(default=0.5, ge=0)
    load_delay_s: float = Field(default=0.0, ge=0)
    source: str = Field(default="", max_length=300, description="the profile or the prediction it was taken from")


class DeploymentSpec(BaseModel):
    """Everything a backend needs to run one release (an endpoint, or one color of it)."""

    endpoint_id: UUID
    release: str = Field(description="backend object name, derived from ids: ep-<id8>[-<color>]")
    namespace: str = "bud-endpoints"
    served_model_name: str = Field(description="the name clients send in 'model'")
    model_id: UUID
    model_uri: str = Field(description="where the runtime loads weights: a local folder or s3://bucket/prefix")
    model_sha256: dict[str, str] = Field(default_factory=dict, description="path -> sha256, for verifying copies")
    architecture: str = ""
    runtime: Runtime = "vllm"
    config: RuntimeConfig = Field(default_factory=RuntimeConfig)
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources
    timing: SimulatedTiming | None = Field(default=None, description="used where replicas run the simulated runtime")
    startup_timeout_s: float = Field(default=900, gt=0, description="model load budget for the startup probe")
    labels: dict[str, str] = Field(default_factory=dict)
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="enabled: the backend's autoscaler owns the replica count (Kubernetes: an HPA)"
    )
    drain_timeout_s: float | None = Field(
        default=None, ge=1, le=600,
        description="how long a stopping replica's in-flight requests may take to finish; default BUD_DRAIN_TIMEOUT_S")


class DeployedGeneration(BaseModel):
    """One generation of an endpoint's replicas: the release it runs and the configuration it was deployed from."""

    generation: int = Field(ge=1)
    spec: DeploymentSpec
    runtime: Runtime
    config: dict = Field(description="the RuntimeConfig as configured (GET shows it as deployment.config)")
    resources: dict
    replicas: int = Field(ge=0)

    @classmethod
    def of(cls, generation: int, spec: DeploymentSpec, config: dict, resources: dict) -> "DeployedGeneration":
        return cls(generation=generation, spec=spec, runtime=spec.runtime, config=config, resources=resources,
                   replicas=spec.replicas)


class ReplicaState(BaseModel):
    name: str
    ready: bool
    url: str | None = None
    node: str | None = None
    phase: str = ""
    reason: str | None = None


class DeploymentState(BaseModel):
    """What the backend sees now."""

    release: str
    desired_replicas: int
    ready_replicas: int
    replicas: list[ReplicaState] = Field(default_factory=list)
    pending_reasons: list[str] = Field(default_factory=list, description="why replicas are not scheduled or not ready")
    exists: bool = True
    service_url: str | None = Field(default=None, description="one URL load-balancing all replicas (Kubernetes Service)")
    drain: list[str] = Field(default_factory=list, description="how each replica stopped by this change drained")
    simulated_nodes: bool = Field(default=False, description="replicas run on fake (kwok) nodes: no server answers")

    @property
    def ready(self) -> bool:
        return self.exists and self.ready_replicas >= self.desired_replicas

    def routable(self) -> list[ReplicaState]:
        """What the gateway sends traffic to: the Service when there is one (it balances the pods), else each replica."""
        if self.service_url:
            return [ReplicaState(name=self.release, ready=self.ready_replicas > 0, url=self.service_url)]
        return self.replicas


# --------------------------------------------------------------------------------------------------- API bodies
def _target(description: str):
    return Field(default=None, ge=TARGET_MIN, le=TARGET_MAX, allow_inf_nan=False, description=description)


class PerformanceTargets(RequestBody):
    max_latency_ms: float | None = _target("end-to-end latency per request, ms")
    max_ttft_ms: float | None = _target("time to first token, ms")
    min_throughput_tps: float | None = _target("output tokens/s over all replicas")
    max_cost_per_hour: float | None = _target("$ per hour over all replicas")
    confidence: Literal["expected", "high"] = Field(
        default="expected", description="high: a config meets a target only with the pessimistic side (P90) of its "
        "predicted interval")


class WorkloadSpec(RequestBody):
    """The traffic the targets are for (the optimizer's workload)."""

    input_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    output_tokens: int = Field(default=256, ge=1, le=1_000_000)
    concurrency: int = Field(default=16, ge=1, le=100_000)


class EndpointCreate(RequestBody):
    name: str = Field(min_length=1, max_length=53, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="also the model name clients send to the gateway")
    project_id: UUID
    model_id: UUID
    cluster_id: UUID


class EndpointConfigRequest(RequestBody):
    """PUT /api/endpoints/{id}/config (automatic with targets, or a manual configuration)."""

    runtime: Runtime = "vllm"
    optimization_method: OptimizationMethod = "REGRESSOR"
    performance_targets: PerformanceTargets = Field(default_factory=PerformanceTargets)
    config: RuntimeConfig | None = Field(default=None, description="the configuration to run: required for MANUAL")
    replicas: int | None = Field(default=None, ge=1, le=1000)
    resources: Resources | None = Field(default=None, description="per replica; gpu_type one of the cluster's types")
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)


class DeployRequest(RequestBody):
    keep_on_failure: bool = Field(default=False, description="leave what was created in place when a step fails")


class ScaleRequest(RequestBody):
    replicas: int = Field(ge=0, le=1000)
    drain_timeout_s: float | None = Field(
        default=None, ge=1, le=600,
        description="seconds a replica that stops may take to finish its in-flight requests (default: the server's)")


# ------------------------------------------------------------------------------------------- workflow payloads
class EndpointRef(BaseModel):
    endpoint_id: UUID


class DeployEndpointInput(BaseModel):
    endpoint_id: UUID
    keep_on_failure: bool = False
    replicas: int | None = Field(default=None, description="override of the endpoint's replica count (scaling)")
    drain_timeout_s: float | None = Field(default=None, description="the scale's drain timeout, if it named one")
    optimization_workflow_id: str | None = Field(
        default=None, description="deployed while the optimizer was still choosing: wait for this run's config")


class ScaleEndpointInput(BaseModel):
    endpoint_id: UUID
    replicas: int = Field(ge=0)
    previous_replicas: int = Field(ge=0)
    drain_timeout_s: float | None = None


class StopWorkflowsInput(BaseModel):
    workflow_ids: list[str]


class DeploymentPlan(BaseModel):
    """What validation decided: the release to run, where, and the GPUs to hold for it."""

    spec: DeploymentSpec
    cluster_id: UUID
    cluster_kind: Literal["local", "kubernetes"]
    gpus_needed: int
    model_bucket: str
    model_prefix: str
    model_files: list[dict] = Field(default_factory=list, description="[{path, size, sha256}] from the registry")


class GpuReservationRequest(BaseModel):
    endpoint_id: UUID
    cluster_id: UUID
    gpu_type: str
    count: int = Field(ge=0)


class EndpointProgress(BaseModel):
    endpoint_id: UUID
    status: EndpointStatus
    step: str | None = None
    error_step: str | None = None
    error_reason: str | None = None
    inference_url: str | None = None
    ready_replicas: int | None = None


class TransferModelInput(BaseModel):
    model_id: UUID
    bucket: str
    prefix: str
    files: list[dict] = Field(description="[{path, size, sha256}] to copy and verify")
    cluster_kind: Literal["local", "kubernetes"]


class TransferModelResult(BaseModel):
    model_uri: str
    bytes_copied: int
    files_skipped: int
    cached: bool


class HealthCheckInput(BaseModel):
    endpoint_id: UUID
    served_model_name: str
    replica_urls: list[str]


class HealthReport(BaseModel):
    replicas_ready: int
    completion_latency_ms: float = 0.0
    stream_first_token_ms: float = 0.0
    stream_chunks: int = 0
    sample_text: str = ""
    note: str | None = None


class PublishInput(BaseModel):
    endpoint_id: UUID
    route_name: str
    replicas: list[ReplicaState] = Field(description="what the gateway routes to (a Service, or each replica)")
    replica_count: int | None = Field(default=None, description="the release's replicas; default len(replicas)")
    ready_replicas: int | None = Field(default=None, description="ready replicas as the backend reports them")
    health: HealthReport | None = None
    first_generation: DeploymentSpec | None = Field(
        default=None, description="a first deploy's release: recorded as generation 1, what the replicas run")


class TransferFileInput(BaseModel):
    bucket: str
    key: str
    path: str
    size: int
    sha256: str | None
    model_id: UUID


class TransferFileResult(BaseModel):
    path: str
    destination: str = Field(description="the model's folder in the cluster's model storage")
    bytes_copied: int
    skipped: bool
    resumed_from: int = 0


class ReleaseRequest(BaseModel):
    cluster_id: UUID
    spec: DeploymentSpec
    timeout_s: float = 900


class HealthProbeInput(BaseModel):
    url: str
    served_model_name: str


# ------------------------------------------------------------------------------------------- rolling updates
class RolloutStep(BaseModel):
    """One batch: start new-generation replicas (`new_replicas` after it) or drain and stop old ones."""

    action: Literal["start", "stop"]
    new_replicas: int = Field(ge=0)
    old_replicas: int = Field(ge=0)


class RolloutPlan(BaseModel):
    """How a rolling update replaces the replicas, decided from the free GPUs before it starts."""

    max_surge: int = Field(ge=0, description="new replicas started beyond the old ones at once; 0: replace in place")
    summary: str = Field(description="the plan in words, shown before the first step")
    steps: list[RolloutStep]


class RollingUpdateInput(BaseModel):
    endpoint_id: UUID
    optimization_workflow_id: str | None = Field(
        default=None, description="deployed while the optimizer was still choosing: wait for this run's config")


class RolloutPrepared(BaseModel):
    """What a rolling update works from: the serving generation, the next one, and the plan between them."""

    old: DeployedGeneration
    new: DeployedGeneration
    cluster_id: UUID
    cluster_kind: Literal["local", "kubernetes"]
    available_gpus: int = Field(description="GPUs of the type this endpoint may hold (free + its own)")
    plan: RolloutPlan
    warmup_ttft_ms: float = Field(description="the warm-up gate: each timed warm-up request's TTFT at most this")
    model_bucket: str
    model_prefix: str
    model_files: list[dict] = Field(default_factory=list)


class RolloutRecord(BaseModel):
    endpoint_id: UUID
    rollout: dict


class WarmUpInput(BaseModel):
    served_model_name: str
    urls: list[str]
    max_ttft_ms: float = Field(gt=0)
    requests: int = Field(default=4, ge=2, le=20)


class WarmUpReport(BaseModel):
    ttft_ms: dict[str, list[float]] = Field(description="per replica URL, the timed warm-up requests' TTFTs")
