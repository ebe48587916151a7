"""The one vocabulary of weight precisions: names and aliases, bytes per element, and quantization methods.

config.json spells a weights dtype many ways ("bfloat16", "bf16", "torch.bfloat16") and quantized checkpoints
name a method instead ("fp8", "awq", "gptq", "mxfp4"). Everything that sizes or times a model (the registry's
facts, the optimizer's memory fit and roofline, the predictor's features) resolves those names here, so they
never disagree on what a name means or how many bytes it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Precision:
    """One weight precision."""

    name: str  # short name used by the GPU catalog, kernel profiles and the perf data: bf16, fp8, fp4, ...
    dtype: str  # the name model facts store (ModelArchitecture.dtype): bfloat16, fp8, int4, ...
    weight_bytes: float  # per weight; 4-bit formats include their block scales (one byte per 16 weights)
    kv_cache_bytes: float  # per KV-cache element: quantized checkpoints are normally served with an fp8 cache
    packed: bool  # several weights per stored tensor element, so a safetensors element count is not a parameter count
    aliases: tuple[str, ...] = ()


PRECISIONS: tuple[Precision, ...] = (
    Precision("bf16", "bfloat16", 2.0, 2.0, False, ("bf16", "bfloat16")),
    Precision("fp16", "float16", 2.0, 2.0, False, ("fp16", "float16", "half")),
    Precision("fp32", "float32", 4.0, 2.0, False, ("fp32", "float32", "float")),
    Precision("fp8", "fp8", 1.0, 1.0, False, ("fp8", "float8", "float8_e4m3fn", "float8_e4m3", "f8_e4m3")),
    Precision("int8", "int8", 1.0, 2.0, True, ("int8",)),
    Precision("fp4", "fp4", 0.5625, 1.0, True, ("fp4", "nvfp4", "mxfp4")),
    Precision("int4", "int4", 0.5625, 1.0, True, ("int4",)),
)
DEFAULT_PRECISION = PRECISIONS[0]

_BY_NAME: dict[str, Precision] = {
    spelling: precision
    for precision in PRECISIONS
    for spelling in (precision.name, precision.dtype, *precision.aliases)
}


def find_precision(name: Any) -> Precision | None:
    """The precision a dtype or precision name means ('torch.' prefix and case ignored); None when unknown."""
    if not isinstance(name, str):
        return None
    return _BY_NAME.get(name.strip().lower().removeprefix("torch."))


def precision_named(name: str) -> Precision:
    """Like find_precision, but an unknown name is a ValueError listing the known ones."""
    precision = find_precision(name)
    if precision is None:
        raise ValueError(f"unknown dtype {str(name)[:40]!r}; known: {', '.join(sorted(_BY_NAME))}")
    return precision


def precision_of(name: str) -> str:
    """The short precision name (a key of the GPU catalog's TFLOPS) for a dtype; bf16 when unknown."""
    return (find_precision(name) or DEFAULT_PRECISION).name


# quantization_config.quant_method -> what its weights are stored as (bits decide for the integer methods).
_FLOAT_METHODS = {"fp8": "fp8", "fbgemm_fp8": "fp8", "mxfp4": "fp4", "nvfp4": "fp4", "modelopt_fp4": "fp4"}
_COMPRESSED_TENSORS_FORMATS = {"float-quantized": "fp8", "naive-quantized": "int8", "int-quantized": "int8",
                               "pack-quantized": "int4", "nvfp4-pack-quantized": "fp4", "mxfp4-pack-quantized": "fp4"}


def quantization_method(quantization_config: Any) -> str | None:
    """The method named by a config.json quantization_config ('fp8', 'gptq', ...), lower case; None without one."""
    if not isinstance(quantization_config, dict):
        return None
    method = quantization_config.get("quant_method")
    if not isinstance(method, str) or not method.strip():
        return None
    return method.strip().lower()[:40]


def quantized_precision(quantization_config: Any) -> Precision | None:
    """What a quantization_config stores the weights as; None when it does not say (the dtype then decides)."""
    method = quantization_method(quantization_config)
    if method is None:
        return None
    config: dict = quantization_config
    if method in _FLOAT_METHODS:
        return _BY_NAME[_FLOAT_METHODS[method]]
    if method == "modelopt":
        algorithm = str(config.get("quant_algo") or "").lower()
        return _BY_NAME["fp4"] if "fp4" in algorithm else _BY_NAME["fp8"] if "fp8" in algorithm else None
    if method == "compressed-tensors":
        return _BY_NAME.get(_COMPRESSED_TENSORS_FORMATS.get(str(config.get("format") or ""), ""))
    if method == "bitsandbytes":
        if config.get("load_in_4bit") is True:
            return _BY_NAME["int4"]
        return _BY_NAME["int8"] if config.get("load_in_8bit") is True else None
    # awq, gptq, autoround, hqq, ...: integer weights of `bits` (AWQ and GPTQ default to 4); 2/3-bit sized as 4
    bits = config.get("bits", config.get("w_bit", config.get("weight_bits")))
    if bits is None and method in ("awq", "gptq"):
        bits = 4
    if isinstance(bits, int) and not isinstance(bits, bool) and bits in (2, 3, 4, 8):
        return _BY_NAME["int8" if bits == 8 else "int4"]
    return None
