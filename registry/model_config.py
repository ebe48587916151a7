"""config.json -> ModelArchitecture, a parameter estimate from the config, and checks of declared facts.

Hugging Face configs spell the same fact differently across families; each fact below lists the keys accepted, in
order (llama, mistral, qwen2/qwen3, mixtral, qwen-moe, gemma, phi3, deepseek-v2/v3, gpt-2-style). Multimodal
configs that nest the language model under `text_config` are read from there. A missing required fact raises
ConfigError naming the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.model_facts import ModelArchitecture
from registry.findings import Finding

DEFAULT_PARAMETER_TOLERANCE = 0.10

_KEYS: dict[str, tuple[str, ...]] = {
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"),
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
_DTYPE_NAMES = {
    "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
    "float32": "float32", "fp32": "float32", "float": "float32", "float8_e4m3fn": "fp8", "fp8": "fp8",
}


class ConfigError(ValueError):
    """config.json lacks a fact (or holds a wrong type); `key` names the expected key."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's part of the config (multimodal configs nest it), inheriting top-level keys."""
    nested = config.get("text_config")
    if isinstance(nested, dict) and not any(key in config for key in _KEYS["num_layers"]):
        return {**config, **nested}
    return config


def _lookup(config: dict[str, Any], fact: str) -> Any:
    for key in _KEYS[fact]:
        if config.get(key) is not None:
            return config[key]
    return None


def _require_int(config: dict[str, Any], fact: str, positive: bool = True) -> int:
    value = _lookup(config, fact)
    keys = _KEYS[fact]
    if value is None:
        also = f" (also accepted: {', '.join(keys[1:])})" if len(keys) > 1 else ""
        raise ConfigError(keys[0], f"config.json is missing '{keys[0]}'{also}")
    if isinstance(value, bool) or not isinstance(value, int) or (positive and value <= 0):
        raise ConfigError(keys[0], f"config.json '{keys[0]}' must be a positive integer, not {value!r}")
    return value


def _is_mla(config: dict[str, Any]) -> bool:
    """DeepSeek-V2/V3 multi-head latent attention."""
    return config.get("kv_lora_rank") is not None and config.get("qk_rope_head_dim") is not None


def _head_dim(config: dict[str, Any], hidden: int, heads: int) -> int:
    explicit = config.get("head_dim")
    if explicit:
        return int(explicit)
    if _is_mla(config):
        return int(config.get("qk_nope_head_dim") or 0) + int(config["qk_rope_head_dim"])
    if hidden % heads:
        raise ConfigError("head_dim", f"config.json has no 'head_dim' and hidden_size {hidden} is not a "
                                      f"multiple of num_attention_heads {heads}")
    return hidden // heads


def _dtype(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = str(quant.get("quant_method", "")).lower()
        bits = quant.get("bits") or (4 if quant.get("load_in_4bit") else 8 if quant.get("load_in_8bit") else None)
        if method == "fp8":
            return "fp8"
        if bits in (4, 8):
            return f"int{bits}"
    raw = _lookup(config, "dtype")
    if raw is None:
        return "bfloat16"
    name = str(raw).removeprefix("torch.").lower()
    return _DTYPE_NAMES.get(name, name)


def weights_are_packed(config: dict[str, Any]) -> bool:
    """True for 4/8-bit quantized checkpoints (GPTQ, AWQ, bitsandbytes): they store weights packed into wider
    integers plus scales and zero points, so tensor elements are not parameters and the config estimate is the
    better figure."""
    return _dtype(_text_config(config)) in ("int4", "int8")


def architecture_from_config(config: dict[str, Any], parameter_count: int | None = None) -> ModelArchitecture:
    """The facts the optimizer needs. parameter_count is the weights' real count when known; the config estimate is
    used without it, and for packed (4/8-bit) weights whose element count is not the parameter count."""
    try:
        return _architecture(config, parameter_count)
    except ConfigError:
        raise
    except ValidationError as exc:  # a value of the right type but impossible, e.g. num_key_value_heads: -1
        field = str(exc.errors()[0]["loc"][0])
        key = _KEYS.get(field, (field,))[0]
        raise ConfigError(key, f"config.json '{key}': {exc.errors()[0]['msg']}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError("config.json", f"config.json holds a value of the wrong type: {exc}") from exc


def _architecture(config: dict[str, Any], parameter_count: int | None) -> ModelArchitecture:
    if not isinstance(config, dict):
        raise ConfigError("config.json", "config.json must hold a JSON object")
    text = _text_config(config)
    model_type = config.get("model_type")  # a multimodal model keeps its own type, e.g. gemma3 (not gemma3_text)
    if not model_type or not isinstance(model_type, str):
        raise ConfigError("model_type", "config.json is missing 'model_type'")
    layers = _require_int(text, "num_layers")
    hidden = _require_int(text, "hidden_size")
    heads = _require_int(text, "num_attention_heads")
    kv_heads = _lookup(text, "num_kv_heads")
    kv_heads = heads if kv_heads in (None, 0) else int(kv_heads)
    num_experts = _lookup(text, "num_experts") or 0
    per_expert = text.get("moe_intermediate_size")
    intermediate = per_expert if num_experts and per_expert else text.get("intermediate_size") or text.get("ffn_dim")
    intermediate = intermediate or text.get("n_inner") or (4 * hidden if text.get("model_type") in _UNGATED_MLP else None)
    if not intermediate:
        raise ConfigError("intermediate_size", "config.json is missing 'intermediate_size'")
    architectures = config.get("architectures") or []
    return ModelArchitecture(
        model_type=model_type,
        architectures=[str(name) for name in architectures] if isinstance(architectures, list) else [],
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=_head_dim(text, hidden, heads),
        intermediate_size=int(intermediate),
        vocab_size=_require_int(text, "vocab_size"),
        max_position_embeddings=_require_int(text, "max_position_embeddings"),
        num_experts=int(num_experts),
        experts_per_token=int(_lookup(text, "experts_per_token") or 0) if num_experts else 0,
        dtype=_dtype(text),
        parameter_count=(parameter_count if parameter_count and not weights_are_packed(config)
                         else estimate_parameter_count(config)),
    )


def supported_context_length(config: dict[str, Any]) -> int:
    """max_position_embeddings, extended by a YaRN/linear/dynamic rope_scaling factor when the config sets one."""
    text = _text_config(config)
    base = _require_int(text, "max_position_embeddings")
    scaling = text.get("rope_scaling")
    if isinstance(scaling, dict):
        kind = scaling.get("rope_type") or scaling.get("type")
        factor = scaling.get("factor")
        original = scaling.get("original_max_position_embeddings") or base
        if kind in ("yarn", "linear", "dynamic") and isinstance(factor, (int, float)) and factor > 1:
            return max(base, int(original * factor))
    return base


def estimate_parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a decoder-only transformer described by config.json (embeddings, attention incl. MLA, dense or
    MoE MLPs with shared experts, norms); within 0.01 % of the published counts of the families above."""
    try:
        return _estimate(config)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError("config.json", f"config.json holds a value of the wrong type: {exc}") from exc


def _estimate(config: dict[str, Any]) -> int:
    text = _text_config(config)
    model_type = str(text.get("model_type", ""))
    layers = _require_int(text, "num_layers")
    hidden = _require_int(text, "hidden_size")
    heads = _require_int(text, "num_attention_heads")
    kv_heads = int(_lookup(text, "num_kv_heads") or heads)
    head_dim = _head_dim(text, hidden, heads)
    vocab = _require_int(text, "vocab_size")
    tied = text.get("tie_word_embeddings")
    tied = model_type in _TIED_BY_DEFAULT if tied is None else bool(tied)

    if _is_mla(text):
        attention = _mla_attention_parameters(text, hidden, heads)
    else:
        attention = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden
        if text.get("attention_bias") or text.get("qkv_bias") or model_type in ("qwen2", "qwen2_moe"):
            attention += (heads + 2 * kv_heads) * head_dim
        if model_type.startswith("qwen3"):
            attention += 2 * head_dim  # q_norm and k_norm

    matrices = 2 if model_type in _UNGATED_MLP else 3
    dense_width = int(text.get("intermediate_size") or text.get("ffn_dim") or text.get("n_inner") or 4 * hidden)
    dense_mlp = matrices * hidden * dense_width
    num_experts = int(_lookup(text, "num_experts") or 0)
    moe_mlp = 0
    if num_experts:
        expert_width = int(text.get("moe_intermediate_size") or dense_width)
        moe_mlp = num_experts * matrices * hidden * expert_width + hidden * num_experts  # experts + router
        shared_count = int(text.get("n_shared_experts") or 0)
        moe_mlp += shared_count * matrices * hidden * expert_width
        shared_width = int(text.get("shared_expert_intermediate_size") or 0)
        if shared_width:
            moe_mlp += matrices * hidden * shared_width + hidden  # qwen2-moe shared expert and its gate

    total = vocab * hidden * (1 if tied else 2) + hidden  # embeddings, lm_head, final norm
    for layer in range(layers):
        mlp = moe_mlp if num_experts and _is_moe_layer(text, layer) else dense_mlp
        total += attention + mlp + 2 * hidden  # two norms per layer
    return total


def _mla_attention_parameters(config: dict[str, Any], hidden: int, heads: int) -> int:
    rope = int(config["qk_rope_head_dim"])
    nope = int(config.get("qk_nope_head_dim") or 0)
    value_dim = int(config.get("v_head_dim") or nope)
    kv_rank = int(config["kv_lora_rank"])
    q_rank = config.get("q_lora_rank")
    query = (hidden * q_rank + q_rank + q_rank * heads * (nope + rope)) if q_rank else hidden * heads * (nope + rope)
    key_value = hidden * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + value_dim)
    return query + key_value + heads * value_dim * hidden


def _is_moe_layer(config: dict[str, Any], layer: int) -> bool:
    if config.get("first_k_dense_replace") is not None:  # deepseek
        frequency = int(config.get("moe_layer_freq") or 1)
        return layer >= int(config["first_k_dense_replace"]) and layer % frequency == 0
    if layer in (config.get("mlp_only_layers") or []):  # qwen-moe
        return False
    step = int(config.get("decoder_sparse_step") or 1)
    return (layer + 1) % step == 0


def check_declared_facts(
    *,
    declared_parameter_count: int | None,
    declared_context_length: int | None,
    config: dict[str, Any],
    weights_parameter_count: int | None,
    tolerance: float = DEFAULT_PARAMETER_TOLERANCE,
    file: str = "config.json",
) -> list[Finding]:
    """Compare what the registrant declared with what the files say.

    - declared parameter_count vs the weights' real count (safetensors), or the config estimate when the weights
      are pickle-only or packed (quantized): a relative difference above `tolerance` blocks;
    - config estimate vs the weights' count: a difference above `tolerance` is a note (the config may describe only
      the language model of a multimodal checkpoint), not a block;
    - declared context_length above what the model supports (max_position_embeddings, or its rope scaling) blocks;
      a shorter declared context is a note.
    """
    findings: list[Finding] = []
    try:
        estimate: int | None = estimate_parameter_count(config)
    except ConfigError:
        estimate = None  # architecture_from_config reports the missing key; compare with the weights alone
    use_weights = bool(weights_parameter_count) and not (estimate is not None and weights_are_packed(config))
    actual = weights_parameter_count if use_weights else estimate
    source = "the weights" if use_weights else "config.json (estimated)"

    if (declared_parameter_count is not None and actual
            and _relative_difference(declared_parameter_count, actual) > tolerance):
        findings.append(Finding(
            check="config", code="parameter_count_mismatch", file=file, subject="parameter_count",
            message=f"declared parameter_count {declared_parameter_count:,} differs from {actual:,} in {source} "
                    f"by {_relative_difference(declared_parameter_count, actual):.0%} (tolerance {tolerance:.0%})",
        ))
    if use_weights and estimate is not None and actual and _relative_difference(estimate, actual) > tolerance:
        findings.append(Finding(
            check="config", code="config_disagrees_with_weights", file=file, blocking=False,
            subject="num_hidden_layers/hidden_size",
            message=f"config.json describes about {estimate:,} parameters but the weights hold {actual:,}",
        ))
    try:
        supported = supported_context_length(config)
    except ConfigError:
        return findings
    if declared_context_length is not None:
        if declared_context_length > supported:
            findings.append(Finding(
                check="config", code="context_length_exceeds_model", file=file, subject="context_length",
                message=f"declared context_length {declared_context_length:,} exceeds the {supported:,} tokens "
                        "config.json supports",
            ))
        elif declared_context_length < supported:
            findings.append(Finding(
                check="config", code="context_length_below_model", file=file, subject="context_length",
                blocking=False,
                message=f"declared context_length {declared_context_length:,} is below the model's {supported:,}",
            ))
    return findings


def _relative_difference(value: int, reference: int) -> float:
    return abs(value - reference) / max(reference, 1)
