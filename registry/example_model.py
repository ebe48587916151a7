"""A small, valid Llama-architecture model folder, generated: what `bud models make-example` writes for a new user
to upload, and what the tests and benchmarks register (any size, streamed with flat memory).

config.json, model.safetensors whose tensors match the config (or shards plus their index), tokenizer.json (a
word-level tokenizer the `tokenizers` library loads), tokenizer_config.json, generation_config.json and a LICENSE.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from registry.safetensors_check import DTYPE_BITS


class TinyLlamaSpec(BaseModel):
    """Dimensions of a generated Llama-architecture model (defaults: ~0.3 M parameters, ~0.6 MB in bf16)."""

    hidden_size: int = Field(default=64, gt=0)
    num_layers: int = Field(default=2, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_kv_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=172, gt=0)
    vocab_size: int = Field(default=512, gt=0)
    max_position_embeddings: int = Field(default=2048, gt=0)
    tie_word_embeddings: bool = False
    dtype: Literal["BF16", "F16", "F32"] = "BF16"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def tensors(self) -> list[tuple[str, list[int]]]:
        """(name, shape) of every tensor in Hugging Face Llama naming, in file order."""
        h, hd, inter = self.hidden_size, self.head_dim, self.intermediate_size
        q_out, kv_out = self.num_attention_heads * hd, self.num_kv_heads * hd
        shapes: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [self.vocab_size, h])]
        for layer in range(self.num_layers):
            prefix = f"model.layers.{layer}"
            shapes += [
                (f"{prefix}.input_layernorm.weight", [h]),
                (f"{prefix}.self_attn.q_proj.weight", [q_out, h]),
                (f"{prefix}.self_attn.k_proj.weight", [kv_out, h]),
                (f"{prefix}.self_attn.v_proj.weight", [kv_out, h]),
                (f"{prefix}.self_attn.o_proj.weight", [h, q_out]),
                (f"{prefix}.post_attention_layernorm.weight", [h]),
                (f"{prefix}.mlp.gate_proj.weight", [inter, h]),
                (f"{prefix}.mlp.up_proj.weight", [inter, h]),
                (f"{prefix}.mlp.down_proj.weight", [h, inter]),
            ]
        shapes.append(("model.norm.weight", [h]))
        if not self.tie_word_embeddings:
            shapes.append(("lm_head.weight", [self.vocab_size, h]))
        return shapes

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors())

    @property
    def weight_bytes(self) -> int:
        return self.parameter_count * DTYPE_BITS[self.dtype] // 8

    def config(self) -> dict:
        torch_dtype = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[self.dtype]
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "torch_dtype": torch_dtype,
        }


def spec_for_total_bytes(total_bytes: int) -> TinyLlamaSpec:
    """A bf16 Llama (TinyLlama-1.1B-like widths) whose weights come close to total_bytes: 2 GB -> 20 layers."""
    base = TinyLlamaSpec(hidden_size=2048, num_layers=1, num_attention_heads=32, num_kv_heads=4,
                         intermediate_size=5632, vocab_size=32000, max_position_embeddings=4096)
    per_layer = TinyLlamaSpec(**{**base.model_dump(), "num_layers": 2}).weight_bytes - base.weight_bytes
    fixed = base.weight_bytes - per_layer
    layers = max(1, round((total_bytes - fixed) / per_layer))
    return TinyLlamaSpec(**{**base.model_dump(), "num_layers": layers})


class TinyModel(BaseModel):
    """What write_tiny_llama() wrote."""

    path: Path
    spec: TinyLlamaSpec
    files: list[str] = Field(description="file names relative to path")
    parameter_count: int = Field(description="real parameters in the safetensors files")
    total_bytes: int


def write_tiny_llama(
    directory: Path,
    spec: TinyLlamaSpec | None = None,
    *,
    shards: int = 1,
    config_overrides: dict | None = None,
    license_text: str | None = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n",
    seed: int = 0,
) -> TinyModel:
    """Write a Llama-architecture model folder whose safetensors tensors match its config.json (unless
    config_overrides makes the config lie). shards > 1 writes model-0000i-of-0000n.safetensors plus the index."""
    spec = spec or TinyLlamaSpec()
    directory.mkdir(parents=True, exist_ok=True)
    config = {**spec.config(), **(config_overrides or {})}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    _write_tokenizer(directory, spec.vocab_size)
    files = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    if license_text is not None:
        (directory / "LICENSE").write_text(license_text)
        files.append("LICENSE")

    tensors = spec.tensors()
    groups = [tensors[i::shards] for i in range(shards)] if shards > 1 else [tensors]
    block = _weight_block(spec.dtype, seed)
    weight_map: dict[str, str] = {}
    for index, group in enumerate(groups, start=1):
        name = "model.safetensors" if shards == 1 else f"model-{index:05d}-of-{shards:05d}.safetensors"
        write_safetensors(directory / name, [(tensor, spec.dtype, shape) for tensor, shape in group], block)
        weight_map.update({tensor: name for tensor, _ in group})
        files.append(name)
    if shards > 1:
        index_doc = {"metadata": {"total_size": spec.weight_bytes}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2))
        files.append("model.safetensors.index.json")
    total = sum((directory / name).stat().st_size for name in files)
    return TinyModel(path=directory, spec=spec, files=sorted(files), parameter_count=spec.parameter_count,
                     total_bytes=total)


def write_safetensors(path: Path, tensors: list[tuple[str, str, list[int]]], block: bytes | None = None) -> int:
    """Stream a safetensors file: header (8-byte length + JSON padded to 8 bytes) then each tensor's bytes, taken
    from a repeating block so any size is written with flat memory. Returns the file size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    block = block or _weight_block("BF16", 0)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        remaining = offset
        while remaining > 0:
            piece = block[: min(remaining, len(block))]
            handle.write(piece)
            remaining -= len(piece)
    return 8 + len(header_bytes) + offset


def _weight_block(dtype: str, seed: int, size: int = 1 << 20) -> bytes:
    """1 MiB of plausible weights (normal, std 0.02) in the given dtype; bf16 keeps float32's upper half."""
    values = np.random.default_rng(seed).normal(0.0, 0.02, size // 2).astype(np.float32)
    if dtype == "BF16":
        raw = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    elif dtype == "F16":
        raw = values.astype(np.float16).tobytes()
    else:
        raw = values.tobytes()
    return (raw * (size // len(raw) + 1))[:size]


def _write_tokenizer(directory: Path, vocab_size: int) -> None:
    """A word-level tokenizer.json the `tokenizers` library can load, and its tokenizer_config.json."""
    special = ["<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(special)}
    vocab.update({f"tok{index}": index for index in range(len(special), vocab_size)})
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": index, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for index, token in enumerate(special)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 2048,
    }, indent=2))
