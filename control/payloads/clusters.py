"""Pydantic payloads that cross the API / workflow / activity boundaries (one model in, one model out)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from control.payloads.common import NAME_PATTERN, GpuTypeName, RequestBody


# A kubeconfig document has a top-level `clusters:` key (a line starting with it); the full rules are core.kubeconfig's.
KUBECONFIG_PATTERN = r"(^|\n)clusters:"


class ClusterStatus(StrEnum):
    REGISTERING = "REGISTERING"
    READY = "READY"
    FAILED = "FAILED"


class GpuInventory(RequestBody):
    """A pool of identical GPUs in a cluster."""

    gpu_type: GpuTypeName
    count: int = Field(gt=0, le=100_000, description="number of GPUs of this type")
    gpus_per_node: int = Field(default=8, gt=0, le=16, description="GPUs per node (bounds tensor parallelism)")
    price_per_hour: float | None = Field(default=None, ge=0, description="override of the catalog $/GPU-hour")


class SimulatedSilicon(RequestBody):
    """How a local cluster's simulated GPUs differ from the optimizer's uncalibrated model: its prediction for a
    single request, times these scales. A measured silicon profile of the model, GPU and runtime, where the project
    ships one, takes precedence. Lets a machine without GPUs show how the predictor learns from what it measures."""

    ttft_scale: float = Field(default=1.0, gt=0, le=100, description="times the predicted time to first token")
    tpot_scale: float = Field(default=1.0, gt=0, le=100, description="times the predicted time per output token")
    batch_scale: float = Field(default=1.0, ge=0, le=100,
                               description="times the runtime's slow-down of each token as the batch fills")


class ClusterSpec(RequestBody):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    kind: Literal["local", "kubernetes"]
    gpus: list[GpuInventory] = Field(min_length=1, max_length=32,
                                     description="one pool per GPU type (an alias counts as its canonical type)")
    kubeconfig: str | None = Field(
        default=None, max_length=256 * 1024, pattern=KUBECONFIG_PATTERN,
        description="kubeconfig YAML with a 'clusters:' section: required for kind kubernetes, refused for local")
    simulation: SimulatedSilicon | None = Field(
        default=None, description="local clusters only: how their simulated GPUs differ from the predictor")

    @field_validator("gpus")
    @classmethod
    def _one_pool_per_type(cls, pools: list[GpuInventory]) -> list[GpuInventory]:
        types = [pool.gpu_type for pool in pools]
        duplicates = sorted({t for t in types if types.count(t) > 1})
        if duplicates:
            raise ValueError(f"each gpu_type may appear once; repeated: {', '.join(duplicates)}")
        return pools


class RegisterClusterInput(BaseModel):
    cluster_id: UUID
    spec: ClusterSpec


class ClusterFacts(BaseModel):
    """What probing the cluster found, shown on GET /api/clusters/{id}."""

    simulated_gpus: bool = Field(description="true when replicas run the simulated runtime (no GPU on the host)")
    nodes: int = 0
    observed_gpus: dict[str, int] = Field(default_factory=dict, description="GPUs per type the probe could see")
    runtime_smoke_ms: float | None = Field(default=None, description="time to start and health-check one replica")
    notes: list[str] = Field(default_factory=list)


class ProbeClusterInput(BaseModel):
    cluster_id: UUID
    spec: ClusterSpec


class ClusterStatusUpdate(BaseModel):
    cluster_id: UUID
    status: ClusterStatus
    facts: ClusterFacts | None = None
    error: str | None = None


class RegisterClusterResult(BaseModel):
    cluster_id: UUID
    status: ClusterStatus
    facts: ClusterFacts | None = None
    error: str | None = None
