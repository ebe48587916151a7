"""Architecture facts about a model, and the one parser that derives them from a Hugging Face config.json.

The registry stores these facts at registration, `bud sim` reads them from a config.json path, the built-in model
catalog lists them, and the optimizer sizes and times a model from them: one type and one parser, so the paths
never disagree on names, units or the attention variant (GQA, MLA, sliding window) that decides the KV cache.

Hugging Face configs spell the same fact differently across families; `_KEYS` lists the keys accepted for each,
in order (llama, mistral, qwen2/qwen3, mixtral, qwen-moe, gemma, phi3, deepseek-v2/v3, gpt-2-style). Multimodal
configs that nest the language model under `text_config` are read from there. config.json is user-supplied: a
missing, mistyped or absurd value is a ConfigError naming the key, never another exception.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from core.precision import Precision, find_precision, precision_named, quantization_method, quantized_precision


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
    sliding_window: int | None = Field(
        default=None,
        gt=0,
        description="tokens each sliding-window layer (those beyond full_attention_layers) keeps in its KV cache; "
        "None = no sliding-window layers",
    )
    tie_word_embeddings: bool = Field(default=False, description="lm_head shares the input embedding matrix")
    quantization: str | None = Field(
        default=None, description="config.json quantization_config.quant_method, e.g. 'fp8', 'awq', 'gptq'"
    )
    dtype: str = Field(default="bfloat16", description="weights dtype: bfloat16, float16, float32, fp8, int8, fp4, int4")
    parameter_count: int = Field(gt=0, description="total parameters (from the weights when known)")

    @field_validator("dtype", mode="before")
    @classmethod
    def _canonical_dtype(cls, value: Any) -> str:
        return precision_named(value).dtype  # 'bf16', 'torch.bfloat16' -> 'bfloat16'; unknown names are refused

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def precision(self) -> Precision:
        return precision_named(self.dtype)


class ConfigError(ValueError):
    """config.json lacks a fact or holds a wrong or impossible value; `key` names the key to fix."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


# Bounds far above any real model: they turn absurd input into a clear error instead of hour-long loops or
# numbers too big for the database.
MAX_LAYERS = 4096
MAX_WIDTH = 1 << 20  # hidden size, head dims, MLA ranks
MAX_HEADS = 1 << 16
MAX_INTERMEDIATE = 1 << 24
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 30
MAX_EXPERTS = 1 << 16
MAX_PARAMETERS = 10**15

_KEYS: dict[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner"),
    "vocab_size": ("vocab_size", "padded_vocab_size"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length",
                                "n_ctx"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts"),
    "experts_per_token": ("num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_top_k"),
    "dtype": ("torch_dtype", "dtype"),
}
# families whose MLP has two matrices (up, down) instead of the gated three (gate, up, down)
_UNGATED_MLP = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "falcon", "phi", "bloom", "gpt_bigcode", "starcoder2"})
_TIED_BY_DEFAULT = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "gpt_neox", "phi", "opt"})
# Every `sliding_window_pattern`-th layer attends to the whole context; Gemma 2 alternates, Gemma 3 defaults to 6.
_DEFAULT_SLIDING_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6, "cohere2": 4}
# Families that honour `use_sliding_window` (qwen2's config carries a sliding_window it does not use by default).
_SLIDING_FROM_MAX_WINDOW_LAYERS = frozenset({"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"})


def load_config_json(raw: str | bytes) -> dict[str, Any]:
    """Parse config.json text; anything but a JSON object (or JSON nested too deep to parse) is a ConfigError."""
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ConfigError("config.json", f"config.json is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(config, dict):
        raise ConfigError("config.json", "config.json must hold a JSON object")
    return config


def architecture_from_config(config: dict[str, Any], parameter_count: int | None = None) -> ModelArchitecture:
    """The facts the optimizer needs. parameter_count is the weights' real count when known; the config estimate is
    used without it, and for packed (4/8-bit) weights whose element count is not the parameter count."""
    return _guarded(lambda: _architecture(config, parameter_count))


def estimate_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a decoder-only transformer described by config.json (embeddings, attention incl. MLA, dense or
    MoE MLPs with shared experts, norms); within 0.01 % of the published counts of the families above."""
    return _guarded(lambda: _estimate(_text_config(config)))


def supported_context_length(config: dict[str, Any]) -> int:
    """max_position_embeddings, extended by a YaRN/linear/dynamic rope_scaling factor when the config sets one."""
    return _guarded(lambda: _supported_context(_text_config(config)))


def weights_are_packed(config: dict[str, Any]) -> bool:
    """True for 4/8-bit quantized checkpoints (GPTQ, AWQ, bitsandbytes, MXFP4): they store weights packed into
    wider integers plus scales, so tensor elements are not parameters and the config estimate is the better figure."""
    return _guarded(lambda: _precision(_text_config(config)).packed)


def _guarded(parse):
    """Run a parse step; every failure of hostile input becomes a ConfigError naming the key."""
    try:
        return parse()
    except ConfigError:
        raise
    except ValidationError as exc:  # a value of the right type but impossible for ModelArchitecture
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "config.json"
        key = _KEYS.get(field, (field,))[0]
        raise ConfigError(key, f"config.json '{key}': {error['msg']}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError) as exc:
        raise ConfigError("config.json", f"config.json holds a value of the wrong type: {str(exc)[:200]}") from None


def _text_config(config: Any) -> dict[str, Any]:
    """The language model's part of the config (multimodal configs nest it), inheriting top-level keys."""
    if not isinstance(config, dict):
        raise ConfigError("config.json", "config.json must hold a JSON object")
    nested = config.get("text_config")
    if isinstance(nested, dict) and not any(key in config for key in _KEYS["num_layers"]):
        return {**config, **nested}
    return config


def _lookup(config: dict[str, Any], fact: str) -> tuple[str, Any]:
    """(the key found, its value) for the first accepted spelling that is set; (first spelling, None) otherwise."""
    for key in _KEYS[fact]:
        if config.get(key) is not None:
            return key, config[key]
    return _KEYS[fact][0], None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(key: str, value: Any, low: int, high: int) -> int:
    """An integer within [low, high]; integral floats (4096.0) are accepted, booleans and strings are not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "a positive integer" if low > 0 else "an integer"
        raise ConfigError(key, f"config.json '{key}' must be {kind}, not {_shown(value)}")
    if not low <= value <= high:
        if value < low and low == 1:
            raise ConfigError(key, f"config.json '{key}' must be a positive integer, not {value}")
        raise ConfigError(key, f"config.json '{key}' must be between {low:,} and {high:,}, not {value:,}")
    return value


def _required(config: dict[str, Any], fact: str, high: int) -> int:
    key, value = _lookup(config, fact)
    if value is None:
        keys = _KEYS[fact]
        also = f" (also accepted: {', '.join(keys[1:])})" if len(keys) > 1 else ""
        raise ConfigError(keys[0], f"config.json is missing '{keys[0]}'{also}")
    return _integer(key, value, 1, high)


def _optional(config: dict[str, Any], key: str, high: int, low: int = 0, default: int = 0) -> int:
    """An optional integer key; null (or absent) gives `default`."""
    value = config.get(key)
    return default if value is None else _integer(key, value, low, high)


def _is_mla(config: dict[str, Any]) -> bool:
    """DeepSeek-V2/V3 multi-head latent attention: keys and values cached as one compressed latent per token."""
    return bool(_optional(config, "kv_lora_rank", MAX_WIDTH)) and config.get("qk_rope_head_dim") is not None


def _heads(config: dict[str, Any]) -> tuple[int, int]:
    """(attention heads, KV heads); KV heads default to the attention heads (no GQA) and must divide them."""
    heads = _required(config, "num_attention_heads", MAX_HEADS)
    key, value = _lookup(config, "num_kv_heads")
    kv_heads = heads if value in (None, 0) else _integer(key, value, 1, heads)
    if heads % kv_heads:
        raise ConfigError(key, f"config.json '{key}' ({kv_heads}) must divide num_attention_heads ({heads})")
    return heads, kv_heads


def _head_dim(config: dict[str, Any], hidden: int, heads: int) -> int:
    if config.get("head_dim"):
        return _integer("head_dim", config["head_dim"], 1, MAX_WIDTH)
    if _is_mla(config):
        return _optional(config, "qk_nope_head_dim", MAX_WIDTH) + _integer(
            "qk_rope_head_dim", config["qk_rope_head_dim"], 1, MAX_WIDTH)
    if hidden % heads:
        raise ConfigError("head_dim", f"config.json has no 'head_dim' and hidden_size {hidden} is not a "
                                      f"multiple of num_attention_heads {heads}")
    return hidden // heads


def _dense_width(config: dict[str, Any], hidden: int) -> int:
    key, value = _lookup(config, "intermediate_size")
    if value is None and str(config.get("model_type")) in _UNGATED_MLP:
        return 4 * hidden
    if value is None:
        raise ConfigError("intermediate_size", "config.json is missing 'intermediate_size'")
    return _integer(key, value, 1, MAX_INTERMEDIATE)


def _experts(config: dict[str, Any]) -> tuple[int, int]:
    """(routed experts per MoE layer, experts per token); (0, 0) for dense models."""
    key, value = _lookup(config, "num_experts")
    experts = 0 if value is None else _integer(key, value, 0, MAX_EXPERTS)
    if not experts:
        return 0, 0
    key, value = _lookup(config, "experts_per_token")
    if value is None:
        raise ConfigError(key, f"config.json sets {experts} experts but not '{key}' (experts routed per token)")
    return experts, _integer(key, value, 1, experts)


def _precision(config: dict[str, Any]) -> Precision:
    """What the weights are stored as: the quantization method when it says, else the dtype (bfloat16 unset)."""
    quantized = quantized_precision(config.get("quantization_config"))
    if quantized is not None:
        return quantized
    key, raw = _lookup(config, "dtype")
    if raw is None:
        return find_precision("bfloat16")
    precision = find_precision(raw)
    if precision is None:
        raise ConfigError(key, f"config.json '{key}' {_shown(raw)} is not a dtype the optimizer knows "
                               "(bfloat16, float16, float32, fp8, int8, fp4, int4)")
    return precision


def _supported_context(config: dict[str, Any]) -> int:
    base = _required(config, "max_position_embeddings", MAX_CONTEXT)
    scaling = config.get("rope_scaling")
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type") or scaling.get("type")
        factor = scaling.get("factor")
        original = scaling.get("original_max_position_embeddings") or base
        original = _integer("rope_scaling.original_max_position_embeddings", original, 1, MAX_CONTEXT)
        if (kind in ("yarn", "linear", "dynamic") and isinstance(factor, (int, float)) and not isinstance(factor, bool)
                and math.isfinite(factor) and factor > 1):
            return min(max(base, int(original * factor)), MAX_CONTEXT)
    return base


def _attention_layout(config: dict[str, Any], layers: int) -> tuple[int | None, int | None]:
    """(layers attending to the whole context or None for all, sliding window of the others or None).

    From `layer_types` when the config lists them; otherwise from the family's pattern of sliding-window layers.
    A window as long as the supported context is no window at all.
    """
    window = config.get("sliding_window")
    if config.get("use_sliding_window") is False or window is None:
        window = None
    else:
        window = _integer("sliding_window", window, 1, MAX_CONTEXT)
    layer_types = config.get("layer_types")
    if layer_types is not None:
        if (not isinstance(layer_types, list) or len(layer_types) != layers
                or not all(isinstance(kind, str) for kind in layer_types)):
            raise ConfigError("layer_types", f"config.json 'layer_types' must list one attention type (a string) "
                                             f"for each of the {layers} layers")
        full = sum(1 for kind in layer_types if kind == "full_attention")
        sliding = any(kind == "sliding_attention" for kind in layer_types)
        if sliding and window is None:
            raise ConfigError("sliding_window", "config.json 'layer_types' has sliding_attention layers but no "
                                                "'sliding_window'")
        if full == layers:
            return None, None
        return full, window if sliding else None
    if config.get("full_attention_interval") is not None:  # linear attention between full layers (Qwen3-Next)
        interval = _integer("full_attention_interval", config["full_attention_interval"], 1, layers)
        return (None, None) if interval == 1 else (layers // interval, None)
    if window is None or window >= _supported_context(config):
        return None, None
    model_type = str(config.get("model_type"))
    pattern = config.get("sliding_window_pattern", _DEFAULT_SLIDING_PATTERN.get(model_type))
    if pattern is not None:
        return layers // _integer("sliding_window_pattern", pattern, 1, layers), window
    if model_type in _SLIDING_FROM_MAX_WINDOW_LAYERS:
        if config.get("use_sliding_window") is not True:
            return None, None
        full = min(_optional(config, "max_window_layers", MAX_LAYERS, default=28), layers)
        return (None, None) if full == layers else (full, window)
    return 0, window  # mistral, mixtral, phi3, starcoder2: every layer slides


def _tied(config: dict[str, Any]) -> bool:
    tied = config.get("tie_word_embeddings")
    return str(config.get("model_type", "")) in _TIED_BY_DEFAULT if tied is None else bool(tied)


def _architecture(config: dict[str, Any], parameter_count: int | None) -> ModelArchitecture:
    text = _text_config(config)
    model_type = config.get("model_type")  # a multimodal model keeps its own type, e.g. gemma3 (not gemma3_text)
    if not model_type or not isinstance(model_type, str):
        raise ConfigError("model_type", "config.json is missing 'model_type'")
    layers = _required(text, "num_layers", MAX_LAYERS)
    hidden = _required(text, "hidden_size", MAX_WIDTH)
    heads, kv_heads = _heads(text)
    experts, per_token = _experts(text)
    if experts and text.get("moe_intermediate_size") is not None:
        intermediate = _integer("moe_intermediate_size", text["moe_intermediate_size"], 1, MAX_INTERMEDIATE)
    else:
        intermediate = _dense_width(text, hidden)
    mla = _is_mla(text)
    full_layers, window = _attention_layout(text, layers)
    precision = _precision(text)
    estimate = _estimate(text)
    if parameter_count is not None and (isinstance(parameter_count, bool) or not isinstance(parameter_count, int)
                                        or parameter_count < 0):
        raise ConfigError("parameter_count", f"parameter_count must be a non-negative integer, not "
                                             f"{_shown(parameter_count)}")
    architectures = config.get("architectures")
    return ModelArchitecture(
        model_type=model_type[:100],
        architectures=[name[:200] for name in architectures if isinstance(name, str)][:16]
        if isinstance(architectures, list) else [],
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=_head_dim(text, hidden, heads),
        intermediate_size=intermediate,
        vocab_size=_required(text, "vocab_size", MAX_VOCAB),
        max_position_embeddings=_required(text, "max_position_embeddings", MAX_CONTEXT),
        num_experts=experts,
        experts_per_token=per_token,
        kv_lora_rank=_optional(text, "kv_lora_rank", MAX_WIDTH) if mla else 0,
        qk_rope_head_dim=_integer("qk_rope_head_dim", text["qk_rope_head_dim"], 1, MAX_WIDTH) if mla else 0,
        full_attention_layers=full_layers,
        sliding_window=window,
        tie_word_embeddings=_tied(text),
        quantization=quantization_method(text.get("quantization_config")),
        dtype=precision.dtype,
        parameter_count=parameter_count if parameter_count and not precision.packed else estimate,
    )


def _estimate(config: dict[str, Any]) -> int:
    model_type = str(config.get("model_type", ""))
    layers = _required(config, "num_layers", MAX_LAYERS)
    hidden = _required(config, "hidden_size", MAX_WIDTH)
    heads, kv_heads = _heads(config)
    head_dim = _head_dim(config, hidden, heads)
    vocab = _required(config, "vocab_size", MAX_VOCAB)

    if _is_mla(config):
        attention = _mla_attention_parameters(config, hidden, heads)
    else:
        attention = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
        if config.get("attention_bias") or config.get("qkv_bias") or model_type in ("qwen2", "qwen2_moe"):
            attention += (heads + 2 * kv_heads) * head_dim
        if model_type.startswith("qwen3"):
            attention += 2 * head_dim  # q_norm and k_norm

    matrices = 2 if model_type in _UNGATED_MLP else 3
    dense_width = _dense_width(config, hidden) if _lookup(config, "intermediate_size")[1] is not None else 4 * hidden
    dense_mlp = matrices * hidden * dense_width
    num_experts, _ = _experts(config)
    moe_mlp = 0
    if num_experts:
        expert_width = _optional(config, "moe_intermediate_size", MAX_INTERMEDIATE, default=dense_width)
        moe_mlp = num_experts * matrices * hidden * expert_width + hidden * num_experts  # experts + router
        moe_mlp += _optional(config, "n_shared_experts", MAX_EXPERTS) * matrices * hidden * expert_width
        shared_width = _optional(config, "shared_expert_intermediate_size", MAX_INTERMEDIATE)
        if shared_width:
            moe_mlp += matrices * hidden * shared_width + hidden  # qwen2-moe shared expert and its gate

    total = vocab * hidden * (1 if _tied(config) else 2) + hidden  # embeddings, lm_head, final norm
    moe_layers = _moe_layers(config, layers) if num_experts else 0
    total += layers * (attention + 2 * hidden)  # two norms per layer
    total += moe_layers * moe_mlp + (layers - moe_layers) * dense_mlp
    if total > MAX_PARAMETERS:
        raise ConfigError("config.json", f"config.json describes {total:.3g} parameters, more than any real model "
                                         f"(at most {MAX_PARAMETERS:.0e})")
    return total


def _mla_attention_parameters(config: dict[str, Any], hidden: int, heads: int) -> int:
    rope = _integer("qk_rope_head_dim", config["qk_rope_head_dim"], 1, MAX_WIDTH)
    nope = _optional(config, "qk_nope_head_dim", MAX_WIDTH)
    value_dim = _optional(config, "v_head_dim", MAX_WIDTH, default=nope)
    kv_rank = _integer("kv_lora_rank", config["kv_lora_rank"], 1, MAX_WIDTH)
    q_rank = _optional(config, "q_lora_rank", MAX_WIDTH)
    query = (hidden * q_rank + q_rank + q_rank * heads * (nope + rope)) if q_rank else hidden * heads * (nope + rope)
    key_value = hidden * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + value_dim)
    return query + key_value + heads * value_dim * hidden


def _moe_layers(config: dict[str, Any], layers: int) -> int:
    """How many layers route to experts (the others keep a dense MLP)."""
    if config.get("first_k_dense_replace") is not None:  # deepseek
        first = _integer("first_k_dense_replace", config["first_k_dense_replace"], 0, layers)
        frequency = _optional(config, "moe_layer_freq", layers, low=1, default=1)
        return sum(1 for layer in range(first, layers) if layer % frequency == 0)
    dense_only = config.get("mlp_only_layers") or []  # qwen-moe
    if not isinstance(dense_only, list):
        raise ConfigError("mlp_only_layers", "config.json 'mlp_only_layers' must be a list of layer indices")
    step = _optional(config, "decoder_sparse_step", layers, low=1, default=1)
    return sum(1 for layer in range(layers) if (layer + 1) % step == 0 and layer not in dense_only)
