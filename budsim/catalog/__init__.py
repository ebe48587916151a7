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


def _estimate_parameters(arch: dict) -> int:
    """Rough parameter count from config.json dimensions (used only when the caller gives none)."""
    h, layers, vocab = arch["hidden_size"], arch["num_layers"], arch["vocab_size"]
    q = arch["num_attention_heads"] * arch["head_dim"]
    kv = arch["num_kv_heads"] * arch["head_dim"]
    attention = h * q + 2 * h * kv + q * h
    mlp = 3 * h * arch["intermediate_size"] * max(1, arch["num_experts"])
    return int(layers * (attention + mlp) + 2 * vocab * h)


def architecture_from_config(config: dict, parameter_count: int | None = None) -> ModelArchitecture:
    """ModelArchitecture from a Hugging Face config.json (text_config is used for multimodal wrappers).

    Without `parameter_count`, the count is estimated from the dimensions (the registry knows the real one).
    """
    cfg = config.get("text_config") or config
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    layer_types = cfg.get("layer_types")
    full_layers = sum(1 for t in layer_types if t == "full_attention") if isinstance(layer_types, list) else None
    quant = (config.get("quantization_config") or {}).get("quant_method", "")
    dtype = {"fp8": "fp8", "mxfp4": "fp4", "modelopt_fp4": "fp4", "awq": "int4", "gptq": "int4"}.get(
        quant, str(cfg.get("torch_dtype") or config.get("torch_dtype") or "bfloat16")
    )
    arch = {
        "model_type": str(cfg.get("model_type") or config.get("model_type") or "unknown"),
        "architectures": list(config.get("architectures") or []),
        "num_layers": int(cfg["num_hidden_layers"]),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg.get("head_dim") or hidden // heads),
        "intermediate_size": int(
            cfg.get("moe_intermediate_size")
            if experts and cfg.get("moe_intermediate_size")
            else cfg["intermediate_size"]
        ),
        "vocab_size": int(cfg["vocab_size"]),
        "max_position_embeddings": int(cfg.get("max_position_embeddings") or 4096),
        "num_experts": experts,
        "experts_per_token": int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 0),
        "kv_lora_rank": int(cfg.get("kv_lora_rank") or 0),
        "qk_rope_head_dim": int(cfg.get("qk_rope_head_dim") or 0) if cfg.get("kv_lora_rank") else 0,
        "full_attention_layers": full_layers,
        "dtype": dtype,
    }
    arch["parameter_count"] = parameter_count or _estimate_parameters(arch)
    return ModelArchitecture.model_validate(arch)
