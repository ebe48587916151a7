"""Payloads of OptimizeDeployment (budsim's request and result travel inside)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from budsim.schemas import OptimizationRequest, OptimizationResult, SearchState
from control.payloads.common import GpuTypeName, RequestBody
from control.payloads.deployments import OptimizationMethod, PerformanceTargets, Runtime, RuntimeConfig, WorkloadSpec


class OptimizationCreate(RequestBody):
    """POST /api/optimizations."""

    model_id: UUID
    cluster_id: UUID
    runtime: Runtime = "vllm"
    optimization_method: OptimizationMethod = "REGRESSOR"
    performance_targets: PerformanceTargets = Field(default_factory=PerformanceTargets)
    gpu_type: GpuTypeName | None = Field(default=None, description=(
        "one of the cluster's GPU types (another is refused with 422); default: the cluster's first"))
    config: RuntimeConfig | None = Field(default=None, description="the config to predict and check: required for MANUAL")
    replicas: int | None = Field(default=None, ge=1, le=1000)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)


class CalibrationSource(BaseModel):
    """Whose measurements calibrate a search: the project's rows of the registered model (on the request's GPU
    type and runtime, at the model's precision)."""

    project_id: UUID
    model_id: UUID


class OptimizeDeploymentInput(BaseModel):
    optimization_id: UUID
    endpoint_id: UUID | None = None
    request: OptimizationRequest
    generations_per_activity: int = Field(default=5, ge=1)
    calibrate_from: CalibrationSource | None = Field(
        default=None, description="where the group's measurements are; None: the search is not calibrated")


class CalibrateSearch(BaseModel):
    request: OptimizationRequest
    source: CalibrationSource


class SearchStep(BaseModel):
    state: SearchState
    generations: int


class OptimizationOutcome(BaseModel):
    optimization_id: UUID
    endpoint_id: UUID | None = None
    status: Literal["SUCCEEDED", "FAILED"]
    result: OptimizationResult | None = None
    error: str | None = None
