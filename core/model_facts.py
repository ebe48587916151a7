"""Architecture facts about a model: what the registry derives from config.json and the optimizer consumes.

One shared type so that the registry (which reads them from the files), the built-in model catalog and the
performance model (which needs layers, heads, sizes) never disagree on names or units.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelArchitecture(BaseModel):
    """Facts derived from a Hugging Face style config.json (plus the real parameter count from the weights)."""

    model_type: str = Field(description="config.json model_type, e.g. 'llama', 'mistral', 'qwen2', 'mixtral'")
    architectures: list[str] = Field(default_factory=list, description="config.json architectures list")
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0, description="dense MLP width, or per-expert width for MoE models")
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    num_experts: int = Field(default=0, ge=0, description="routed experts per MoE layer; 0 for dense models")
    experts_per_token: int = Field(default=0, ge=0)
    # Attention variants that change the KV-cache size (the optimizer's memory fit needs them):
    kv_lora_rank: int = Field(
        default=0, ge=0, description="MLA (DeepSeek-V3 style) compressed KV width cached per token; 0 = ordinary attention"
    )
    qk_rope_head_dim: int = Field(default=0, ge=0, description="MLA rotary key width cached beside the compressed KV")
    full_attention_layers: int | None = Field(
        default=None,
        ge=0,
        description="layers whose KV cache grows with the context; None = all (sliding-window or linear-attention "
        "layers keep a bounded state)",
    )
    dtype: str = Field(default="bfloat16", description="weights dtype: bfloat16, float16, float32, fp8, ...")
    parameter_count: int = Field(gt=0, description="total parameters (from the weights when known)")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0
