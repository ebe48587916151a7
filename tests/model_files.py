"""Generators of model folders and hostile files for tests and benchmarks (written to disk, streamed, any size).

- write_tiny_llama(): a Llama-architecture folder (config.json, model.safetensors whose tensors match the config,
  tokenizer.json, tokenizer_config.json, LICENSE); spec_for_total_bytes() sizes one for a benchmark (e.g. 2 GB).
  They live in registry.example_model (`bud models make-example` writes the same folder) and are re-exported here.
- write_eicar_file(): the EICAR antivirus test string, optionally buried inside padding.
- malicious_pickle_bytes() / write_malicious_pickle(): a pickle whose REDUCE calls os.system, written opcode by
  opcode (nothing is pickled from a live object, and nothing here is ever unpickled).
- write_torch_zip_checkpoint() / write_legacy_torch_checkpoint(): torch-style checkpoints, clean or carrying that
  payload.
- write_truncated_safetensors(): a safetensors file cut short; a model whose config.json disagrees with its tensors
  comes from write_tiny_llama(config_overrides=...), e.g. {"num_hidden_layers": 40} over 2 layers of weights.
- write_padded_json() / write_nested_json(): a JSON object of any size, JSON nested any depth (oversized or
  unparseable config.json); write_padded_text(): a README/LICENSE of any size.
- write_safetensors_claiming_header(): a safetensors file whose header length claims far more than the file holds;
  write_safetensors_with_nested_header(): one whose header is JSON nested too deep to parse.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from registry.example_model import (  # noqa: F401 (the model folder generator, re-exported for the tests)
    TinyLlamaSpec,
    TinyModel,
    spec_for_total_bytes,
    write_safetensors,
    write_tiny_llama,
)
from registry.safetensors_check import DTYPE_BITS

# Assembled from two halves so that no file of this repository contains the EICAR string itself (a virus scanner
# run over the checkout would flag it); the bytes produced are the standard 68-byte EICAR test file.
_EICAR_HEAD = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR"
_EICAR_TAIL = "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def eicar_bytes() -> bytes:
    return (_EICAR_HEAD + _EICAR_TAIL).encode("ascii")


def write_eicar_file(path: Path, padding_before: int = 0, padding_after: int = 0) -> Path:
    """EICAR, optionally after/before zero padding (to place it anywhere in a large file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        _write_zeros(handle, padding_before)
        handle.write(eicar_bytes())
        _write_zeros(handle, padding_after)
    return path


def _write_zeros(handle, count: int) -> None:
    block = bytes(min(count, 1 << 20))
    while count > 0:
        handle.write(block[: min(count, len(block))])
        count -= len(block)


# ------------------------------------------------------------------------------------------------------ pickles
class PickleOps:
    """Writes pickle opcodes one by one (protocol 2 style, like torch.save), so tests control every byte."""

    def __init__(self, protocol: int = 2):
        self.parts: list[bytes] = [b"\x80" + bytes([protocol])]
        self.memo_size = 0

    def raw(self, data: bytes) -> "PickleOps":
        self.parts.append(data)
        return self

    def global_(self, module: str, name: str) -> "PickleOps":
        return self.raw(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def stack_global(self, module: str, name: str) -> "PickleOps":
        return self.string(module).string(name).raw(b"\x93")

    def string(self, text: str) -> "PickleOps":
        data = text.encode("utf-8")
        if len(data) < 256:
            return self.raw(b"\x8c" + bytes([len(data)]) + data)
        return self.raw(b"X" + struct.pack("<I", len(data)) + data)

    def int_(self, value: int) -> "PickleOps":
        if 0 <= value < 256:
            return self.raw(b"K" + bytes([value]))
        if -(2**31) <= value < 2**31:
            return self.raw(b"J" + struct.pack("<i", value))
        encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return self.raw(b"\x8a" + bytes([len(encoded)]) + encoded)

    def put(self) -> int:
        """BINPUT the top of the stack; returns its memo index."""
        index = self.memo_size
        self.raw(b"q" + bytes([index]))
        self.memo_size += 1
        return index

    def get(self, index: int) -> "PickleOps":
        return self.raw(b"h" + bytes([index]))

    def mark(self) -> "PickleOps":
        return self.raw(b"(")

    def tuple_(self) -> "PickleOps":
        return self.raw(b"t")

    def tuple1(self) -> "PickleOps":
        return self.raw(b"\x85")

    def empty_tuple(self) -> "PickleOps":
        return self.raw(b")")

    def reduce(self) -> "PickleOps":
        return self.raw(b"R")

    def pop(self) -> "PickleOps":
        return self.raw(b"0")

    def false(self) -> "PickleOps":
        return self.raw(b"\x89")

    def binpersid(self) -> "PickleOps":
        return self.raw(b"Q")

    def setitems(self) -> "PickleOps":
        return self.raw(b"u")

    def stop(self) -> bytes:
        self.parts.append(b".")
        return b"".join(self.parts)


def malicious_pickle_bytes(
    command: str = "echo pwned", style: Literal["global", "stack_global", "memo"] = "global"
) -> bytes:
    """A pickle equivalent to `os.system(command)` on load.

    global: protocol 2 `GLOBAL 'os system'`; stack_global: protocol 4 STACK_GLOBAL with the two names pushed as
    strings; memo: the names are memoized, popped, and fetched back with BINGET before STACK_GLOBAL, which defeats
    scanners that only look at the two opcodes before STACK_GLOBAL.
    """
    if style == "global":
        ops = PickleOps(2).global_("os", "system")
    elif style == "stack_global":
        ops = PickleOps(4).stack_global("os", "system")
    else:
        ops = PickleOps(4)
        ops.string("os")
        module_index = ops.put()
        ops.pop().string("system")
        name_index = ops.put()
        ops.pop().string("harmless").string("names").pop().pop()
        ops.get(module_index).get(name_index).raw(b"\x93")
    return ops.string(command).tuple1().reduce().stop()


def write_malicious_pickle(path: Path, command: str = "echo pwned",
                           style: Literal["global", "stack_global", "memo"] = "global") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(malicious_pickle_bytes(command, style))
    return path


_TORCH_STORAGE_CLASS = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage", "I64": "LongStorage"}


def state_dict_pickle(tensors: dict[str, tuple[str, list[int]]], malicious_command: str | None = None) -> bytes:
    """data.pkl as torch.save writes it: OrderedDict of name -> _rebuild_tensor_v2(persistent storage ref, ...).

    tensors maps name -> (safetensors dtype F32|F16|BF16|I64, shape); storage i holds tensor i. With
    malicious_command, one more entry's value is os.system(command), as a poisoned checkpoint would carry.
    """
    ops = PickleOps(2).global_("collections", "OrderedDict").empty_tuple().reduce()
    ops.put()
    ops.mark()
    for index, (name, (dtype, shape)) in enumerate(tensors.items()):
        numel = int(np.prod(shape)) if shape else 1
        ops.string(name).global_("torch._utils", "_rebuild_tensor_v2")
        ops.mark()  # the argument tuple
        ops.mark().string("storage").global_("torch", _TORCH_STORAGE_CLASS[dtype]).string(str(index))
        ops.string("cpu").int_(numel).tuple_().binpersid()
        ops.int_(0)  # storage offset
        ops.mark()
        for dim in shape:
            ops.int_(dim)
        ops.tuple_()
        ops.mark()
        for stride in _contiguous_strides(shape):
            ops.int_(stride)
        ops.tuple_()
        ops.false().global_("collections", "OrderedDict").empty_tuple().reduce()
        ops.tuple_().reduce()
    if malicious_command is not None:
        ops.string("_extra_state").global_("os", "system").string(malicious_command).tuple1().reduce()
    ops.setitems()
    return ops.stop()


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return list(reversed(strides))


_SMALL_TENSORS: dict[str, tuple[str, list[int]]] = {
    "embed.weight": ("F32", [16, 8]),
    "proj.weight": ("F32", [8, 8]),
    "proj.bias": ("F32", [8]),
}


def write_torch_zip_checkpoint(path: Path, malicious_command: str | None = None, archive_name: str = "archive") -> Path:
    """A zip-wrapped checkpoint laid out like torch.save's (data.pkl, data/<storage>, version, byteorder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", state_dict_pickle(_SMALL_TENSORS, malicious_command))
        archive.writestr(f"{archive_name}/byteorder", "little")
        for index, (_, (dtype, shape)) in enumerate(_SMALL_TENSORS.items()):
            nbytes = int(np.prod(shape)) * DTYPE_BITS[dtype] // 8
            archive.writestr(f"{archive_name}/data/{index}", _pattern_bytes(nbytes))
        archive.writestr(f"{archive_name}/version", "3\n")
        archive.writestr(f"{archive_name}/.data/serialization_id", "0123456789")
    return path


def write_legacy_torch_checkpoint(path: Path, malicious_command: str | None = None) -> Path:
    """The pre-1.6 torch format: five pickles back to back (magic, protocol, sys info, state dict, storage keys),
    then each storage as an 8-byte element count and raw bytes."""
    magic = PickleOps(2).int_(0x1950A86A20F9469CFC6C).stop()
    protocol = PickleOps(2).int_(1001).stop()
    sys_info = PickleOps(2).raw(b"}").stop()  # an empty dict is enough for the layout
    keys = PickleOps(2).mark()
    for index in range(len(_SMALL_TENSORS)):
        keys.string(str(index))
    keys_pickle = keys.raw(b"l").stop()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for part in (magic, protocol, sys_info, state_dict_pickle(_SMALL_TENSORS, malicious_command), keys_pickle):
            handle.write(part)
        for dtype, shape in _SMALL_TENSORS.values():
            numel = int(np.prod(shape))
            handle.write(struct.pack("<q", numel))
            handle.write(_pattern_bytes(numel * DTYPE_BITS[dtype] // 8))
    return path


def _pattern_bytes(count: int) -> bytes:
    return bytes((index * 37 + 11) % 256 for index in range(count))


def write_truncated_safetensors(source: Path, destination: Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first keep_fraction of a safetensors file (header intact, data cut short), as a broken upload."""
    size = source.stat().st_size
    keep = int(size * keep_fraction)
    with open(source, "rb") as reader, open(destination, "wb") as writer:
        while keep > 0:
            piece = reader.read(min(keep, 1 << 20))
            writer.write(piece)
            keep -= len(piece)
    return destination


# ------------------------------------------------------------------------------------------ oversized and deep files
def write_padded_json(path: Path, total_bytes: int, fields: dict | None = None) -> Path:
    """A valid JSON object (`fields` plus a "padding" string) of exactly total_bytes, written in 1 MiB pieces."""
    head = json.dumps({**(fields or {}), "padding": ""})[:-2]  # ...,"padding": "  (the string left open)
    filler = total_bytes - len(head.encode()) - 2
    if filler < 0:
        raise ValueError(f"{total_bytes} bytes cannot hold {head!r}")
    with open(path, "w") as handle:
        handle.write(head)
        _write_repeated(handle, "x", filler)
        handle.write('"}')
    return path


def write_padded_text(path: Path, total_bytes: int, first_line: str = "Apache License\nVersion 2.0\n") -> Path:
    """A text file (a README or LICENSE) of total_bytes: first_line, then filler lines."""
    with open(path, "w") as handle:
        handle.write(first_line)
        _write_repeated(handle, "filler line\n", total_bytes - len(first_line.encode()))
    return path


def _write_repeated(handle, unit: str, count: int) -> None:
    block = unit * ((1 << 20) // len(unit) + 1)
    while count > 0:
        piece = block[: min(count, len(block))]
        handle.write(piece)
        count -= len(piece)


def nested_json(depth: int) -> str:
    """An object whose value nests `depth` lists deep: {"a": [[[...]]]}."""
    return '{"a": ' + "[" * depth + "]" * depth + "}"


def write_nested_json(path: Path, depth: int = 100_000) -> Path:
    path.write_text(nested_json(depth))
    return path


def write_safetensors_claiming_header(path: Path, claimed_header_bytes: int = 100 * 1024**3,
                                      actual_bytes: int = 4096) -> Path:
    """8 bytes of header length claiming `claimed_header_bytes` (100 GB), then actual_bytes of JSON-looking data."""
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", claimed_header_bytes))
        handle.write(b"{" + b" " * (actual_bytes - 1))
    return path


def write_safetensors_with_nested_header(path: Path, depth: int = 100_000) -> Path:
    """A safetensors file whose header length is right but whose header JSON nests `depth` levels deep."""
    header = nested_json(depth).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path
