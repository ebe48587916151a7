"""Built-in catalogs: GPU spec sheets and architecture facts for common Hugging Face models.

Both tables are small committed JSON files next to this module, so a newcomer can read and extend them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from budsim.errors import InvalidRequest
from core.model_facts import ModelArchitecture

_HERE = Path(__file__).resolve().parent


class GpuSpec(BaseModel):
    """One GPU type: what the roofline needs plus a default price that a cluster may override."""

    name: str = Field(description="canonical name, e.g. 'nvidia-h100-80gb'")
    aliases: list[str] = Field(
        default_factory=list, description="other accepted names, e.g. the perf data's 'h100_sxm'"
    )
    memory_bytes: int = Field(gt=0)
    hbm_bandwidth: float = Field(gt=0, description="bytes/s")
    bf16_tflops: float = Field(gt=0, description="dense bf16 tensor-core TFLOPS")
    fp8_tflops: float | None = Field(
        default=None, description="dense fp8 TFLOPS; None when the GPU has no fp8 tensor cores"
    )
    fp4_tflops: float | None = Field(default=None, description="dense fp4 TFLOPS; None when unsupported")
    interconnect_bandwidth: float = Field(
        gt=0, description="GPU-to-GPU bytes/s inside a node (NVLink or PCIe), one way"
    )
    inter_node_bandwidth: float = Field(gt=0, description="bytes/s per GPU between nodes, one way")
    gpus_per_node: int = Field(gt=0, description="GPUs sharing the fast interconnect (72 for an NVL72 rack)")
    nvlink: bool
    sm_version: int
    price_per_hour: float = Field(ge=0, description="default USD per GPU-hour")

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    def tflops(self, precision: str) -> float:
        """Dense tensor throughput for GEMMs in `precision`, falling back to the next wider supported format."""
        if precision == "fp4" and self.fp4_tflops:
            return self.fp4_tflops
        if precision in ("fp4", "fp8") and self.fp8_tflops:
            return self.fp8_tflops
        return self.bf16_tflops


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=1)
def _gpu_table() -> dict[str, GpuSpec]:
    raw = json.loads((_HERE / "gpus.json").read_text())
    table: dict[str, GpuSpec] = {}
    for entry in raw["gpus"]:
        spec = GpuSpec.model_validate(entry)
        for name in [spec.name, *spec.aliases]:
            table[_key(name)] = spec
    return table


def list_gpus() -> list[GpuSpec]:
    """Every GPU type once, in catalog order."""
    seen: dict[str, GpuSpec] = {}
    for spec in _gpu_table().values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


def get_gpu(name: str) -> GpuSpec:
    """Look a GPU up by canonical name or alias (case and '_' vs '-' do not matter)."""
    spec = _gpu_table().get(_key(name or ""))
    if spec is None:
        known = "; ".join(f"{s.name} ({', '.join(s.aliases)})" for s in list_gpus())
        raise InvalidRequest("gpu_type", f"unknown GPU {name!r}; known (aliases in brackets): {known}")
    return spec


class CatalogModel(BaseModel):
    ids: list[str]
    architecture: ModelArchitecture
    note: str | None = None


@lru_cache(maxsize=1)
def _model_table() -> dict[str, CatalogModel]:
    raw = json.loads((_HERE / "models.json").read_text())
    table: dict[str, CatalogModel] = {}
    for entry in raw["models"]:
        model = CatalogModel.model_validate(entry)
        for hf_id in model.ids:
            table[hf_id.lower()] = model
    return table


def list_models() -> list[str]:
    """Every Hugging Face id the catalog knows."""
    return sorted({hf_id for m in _model_table().values() for hf_id in m.ids})


def get_model(hf_id: str) -> ModelArchitecture:
    """Architecture facts for a Hugging Face id ('org/name'; case does not matter, a bare 'name' works when unique)."""
    key = (hf_id or "").strip().lower()
    table = _model_table()
    if key in table:
        return table[key].architecture.model_copy(deep=True)
    if "/" not in key:
        matches = {id(m): m for k, m in table.items() if k.split("/", 1)[1] == key}
        if len(matches) == 1:
            return next(iter(matches.values())).architecture.model_copy(deep=True)
    canonical = sorted({m.ids[0] for m in table.values()})
    raise InvalidRequest(
        "model", f"unknown model {hf_id!r}; pass its config.json facts, or a catalog id such as: {', '.join(canonical)}"
    )
