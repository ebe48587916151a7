"""Payloads of the deployment pipeline: what a cluster backend is asked to run, and what it reports back."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

Runtime = Literal["vllm", "sglang", "tensorrt-llm"]


class EndpointStatus(StrEnum):
    PENDING = "PENDING"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    DELETING = "DELETING"
    DELETED = "DELETED"


class RuntimeConfig(BaseModel):
    """The seed's runtime parameters (Configuration Reference)."""

    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    max_model_len: int | None = Field(default=None, ge=16, le=10_000_000, description="default: the model's context")
    max_num_seqs: int = Field(default=256, ge=1, le=65_536)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=0.99)
    max_num_batched_tokens: int | None = Field(default=None, ge=16, le=10_000_000)


class Resources(BaseModel):
    """The seed's resource requests, per replica."""

    gpu_type: str
    gpu_count: int = Field(ge=1, le=64)
    cpu_cores: float | None = Field(default=None, gt=0, le=1024)
    memory_gb: float | None = Field(default=None, gt=0, le=16_384)


class SimulatedTiming(BaseModel):
    """How the simulated runtime times tokens: the optimizer's prediction for this model, GPU and config."""

    ttft_ms: float = Field(ge=0)
    tpot_ms: float = Field(ge=0)
    load_delay_s: float = Field(default=0.0, ge=0)


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

    @property
    def ready(self) -> bool:
        return self.exists and self.ready_replicas >= self.desired_replicas
