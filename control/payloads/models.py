"""Payloads of the model registry: the registration request, RegisterModel's steps and its scan report."""

from __future__ import annotations

import posixpath
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from core.model_facts import ModelArchitecture
from control.payloads.common import IDENTIFIER_PATTERN, GpuTypeName, RequestBody, SmallJsonObject
from registry.findings import Finding

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ModelStatus(StrEnum):
    SCANNING = "SCANNING"
    AVAILABLE = "AVAILABLE"
    QUARANTINED = "QUARANTINED"
    FAILED = "FAILED"


class ModelRegistration(RequestBody):
    """POST /api/models: where the files are and what the user declares about them (checked by the scan)."""

    name: str = Field(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN, examples=["my-custom-model"])
    architecture: str = Field(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN, examples=["llama"])
    parameter_count: int = Field(gt=0, le=100_000_000_000_000, examples=[7_000_000_000])
    context_length: int = Field(gt=0, le=100_000_000, examples=[8192])
    source_path: str = Field(max_length=512, pattern=r"^s3://[a-z0-9][a-z0-9.-]*/[^/].*$",
                             examples=["s3://models/default/my-custom-model"],
                             description="the weights' S3 prefix, inside the project's key space: "
                                         "s3://<models bucket>/<project name>/<model>/...")
    license: str | None = Field(default=None, max_length=200, examples=["apache-2.0"])
    version: str = Field(default="1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

    @field_validator("source_path")
    @classmethod
    def _plain_s3_prefix(cls, value: str) -> str:
        """Shape only; which bucket is allowed is a setting, checked by the API."""
        if not value.startswith("s3://"):
            raise ValueError("must be an s3:// URI such as s3://models/my-model")
        bucket, _, prefix = value[len("s3://"):].partition("/")
        prefix = prefix.strip("/")
        if not bucket or not prefix:
            raise ValueError("must name a bucket and a non-empty prefix, e.g. s3://models/my-model")
        parts = prefix.split("/")
        if any(part in ("", ".", "..") for part in parts) or "\\" in prefix or posixpath.normpath(prefix) != prefix:
            raise ValueError("the prefix may not contain '..', '.', empty segments or backslashes")
        return f"s3://{bucket}/{prefix}"

    @property
    def bucket(self) -> str:
        return self.source_path[len("s3://"):].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.source_path[len("s3://"):].split("/", 1)[1]


class BenchmarkCreate(RequestBody):
    """POST /api/models/{id}/benchmarks: a quality score, or a measured serving figure."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$", examples=["mmlu"])
    score: float = Field(allow_inf_nan=False, examples=[68.4])
    kind: str = Field(default="quality", pattern="^(quality|performance)$")
    unit: str | None = Field(default=None, max_length=32, examples=["%", "tokens/s", "ms"])
    gpu_type: GpuTypeName | None = Field(default=None, description="the GPU a performance figure was measured on")
    details: SmallJsonObject = Field(default_factory=dict,
                                     description="e.g. the serving config a performance figure was measured with")
    source: str | None = Field(default=None, max_length=200)


# --------------------------------------------------------------------------------------------- workflow payloads
class RegisterModelInput(BaseModel):
    model_id: UUID
    bucket: str
    prefix: str
    declared_parameter_count: int
    declared_context_length: int
    requested_license: str | None = None


class ListObjectsInput(BaseModel):
    bucket: str
    prefix: str


class ModelObject(BaseModel):
    key: str
    path: str = Field(description="relative to the model's prefix")
    size: int
    etag: str = ""


class ObjectListing(BaseModel):
    objects: list[ModelObject]


class FileRef(BaseModel):
    bucket: str
    object: ModelObject


class ChecksumResult(BaseModel):
    path: str
    size: int
    sha256: str


class FileScanResult(BaseModel):
    path: str
    check: str
    findings: list[Finding] = Field(default_factory=list)
    summary: str = ""
    parameter_count: int | None = None
    layers: dict[str, list[int]] = Field(default_factory=dict,
                                         description="safetensors: tensor-name stem -> the layer indices it holds")


class AnalyzeConfigInput(BaseModel):
    bucket: str
    objects: list[ModelObject]
    declared_parameter_count: int
    declared_context_length: int
    requested_license: str | None = None
    weights_parameter_count: int | None = None
    weights_layers: dict[str, list[int]] | None = Field(
        default=None, description="layer indices per tensor-name stem over all safetensors files; None without any")


class ConfigAnalysis(BaseModel):
    facts: ModelArchitecture | None = None
    license_id: str = "unknown"
    license_category: str = "unknown"
    license_source: str = "none"
    findings: list[Finding] = Field(default_factory=list)


class QuarantineInput(BaseModel):
    bucket: str
    objects: list[ModelObject]
    quarantine_prefix: str


class FileReport(BaseModel):
    path: str
    size: int
    sha256: str | None = None
    checks: dict[str, str] = Field(default_factory=dict, description="check -> one-line outcome")


class ScanReport(BaseModel):
    status: ModelStatus
    files: list[FileReport] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    large_file_policy: str = ""
    quarantine_prefix: str | None = None
    finished_at: datetime | None = None


class RecordScanInput(BaseModel):
    model_id: UUID
    status: ModelStatus
    report: ScanReport
    facts: ModelArchitecture | None = None
    real_parameter_count: int | None = None
    license_id: str | None = None
    license_category: str | None = None
    checksums: list[ChecksumResult] = Field(default_factory=list)
    error: str | None = None


class RegisterModelResult(BaseModel):
    model_id: UUID
    status: ModelStatus
    blocking_findings: int = 0
    error: str | None = None
