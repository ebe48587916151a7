"""Pydantic payloads that cross the API / workflow / activity boundaries (one model in, one model out)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from core.gpu_types import GPU_TYPE_NAMES, canonical_gpu_type
from control.payloads.common import NAME_PATTERN




class ClusterStatus(StrEnum):
    REGISTERING = "REGISTERING"
    READY = "READY"
    FAILED = "FAILED"


class GpuInventory(BaseModel):
    """A pool of identical GPUs in a cluster."""

    gpu_type: str = Field(max_length=64, json_schema_extra={"enum": list(GPU_TYPE_NAMES)},
                          description="GPU type (canonical names such as nvidia-h100-80gb, or aliases such as h100_sxm)")
    count: int = Field(gt=0, le=100_000, description="number of GPUs of this type")
    gpus_per_node: int = Field(default=8, gt=0, le=16, description="GPUs per node (bounds tensor parallelism)")
    price_per_hour: float | None = Field(default=None, ge=0, description="override of the catalog $/GPU-hour")

    @field_validator("gpu_type")
    @classmethod
    def _known_gpu_type(cls, value: str) -> str:
        return canonical_gpu_type(value)


class ClusterSpec(BaseModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    kind: Literal["local", "kubernetes"]
    gpus: list[GpuInventory] = Field(min_length=1, max_length=32)
    kubeconfig: str | None = Field(default=None, max_length=256 * 1024,
                                   description="kubeconfig YAML (kind kubernetes only)")

    @field_validator("gpus")
    @classmethod
    def _one_pool_per_type(cls, pools: list[GpuInventory]) -> list[GpuInventory]:
        types = [pool.gpu_type for pool in pools]
        duplicates = sorted({t for t in types if types.count(t) > 1})
        if duplicates:
            raise ValueError(f"each gpu_type may appear once; repeated: {', '.join(duplicates)}")
        return pools

    @field_validator("kubeconfig")
    @classmethod
    def _kubeconfig_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.search(r"^clusters:", value, re.MULTILINE):
            raise ValueError("kubeconfig must be a kubeconfig YAML document with a 'clusters:' section")
        return value


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
