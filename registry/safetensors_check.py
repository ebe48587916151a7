"""Validate a safetensors file from its header alone and count its real parameters.

Layout: an 8-byte little-endian header length N, N bytes of JSON, then the data region. The JSON maps each tensor
name to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data region) plus an optional
`__metadata__` of strings. A sound file (the rules the safetensors library itself enforces) has:

- 0 < N <= 100 MB and the header inside the file; the JSON starts with '{' and is an object;
- known dtypes, non-negative integer shapes, and end - begin == elements x dtype size for every tensor;
- tensors that, sorted by offset, start at 0 and follow each other without gap or overlap;
- a data region that ends exactly at the end of the file: nothing cut off, nothing appended.

Only the header is read (via `read_range`, e.g. S3 range GETs), so checking a 10 GB shard costs one small read.
A hostile header is bounded too: shapes and offsets must fit in 64 bits (as the library's usize), a report keeps
at most MAX_FINDINGS_PER_FILE findings, and JSON nested too deep to parse is a finding, not a crash.

The report also lists which numbered blocks the tensor names hold (`model.layers.{i}.`, `transformer.h.{i}.`, ...)
per name stem, so the registry can compare the layers present with the layers config.json declares.
"""

from __future__ import annotations

import inspect
import json
import re
import struct
from collections.abc import Awaitable, Callable
from math import prod
from pathlib import Path

from pydantic import BaseModel, Field

from registry.findings import Finding

MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers
MAX_TENSOR_FINDINGS = 20  # a corrupt header can break every tensor; the report keeps the first ones
MAX_FINDINGS_PER_FILE = 25  # every kind together (duplicates, gaps, overlaps), plus one line counting the rest
MAX_DIMENSION = 2**64 - 1  # the library reads shapes and offsets as 64-bit unsigned integers
MAX_RANK = 64
# Numbered blocks in tensor names: `model.layers.3.`, `transformer.h.3.`, `transformer.blocks.3.`, `encoder.block.3.`
LAYER_NAME = re.compile(r"^((?:.*?\.)?(?:layers|layer|h|blocks|block))\.(\d{1,6})\.")
MAX_LAYER_STEMS = 8  # the stems with the most layers (language model, vision tower, MTP head, ...)
MAX_LAYER_INDICES = 2048  # per stem; the deepest published models have under 200 layers

# bits per element (sub-byte float formats pack several elements per byte)
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

ReadRange = Callable[[int, int], "bytes | Awaitable[bytes]"]


class SafetensorsReport(BaseModel):
    file: str
    file_size: int
    header_length: int | None = Field(default=None, description="N, the JSON header's length in bytes")
    tensor_count: int = 0
    parameter_count: int = Field(default=0, description="sum of elements over all well-formed tensors")
    parameters_by_dtype: dict[str, int] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    findings: list[Finding] = Field(default_factory=list)
    layers: dict[str, list[int]] = Field(
        default_factory=dict, description="name stem ('model.layers') -> the layer indices its tensors name")
    tensor_names: list[str] = Field(default_factory=list, exclude=True,
                                    description="kept in memory for index checks; not serialized into reports")

    @property
    def ok(self) -> bool:
        return not any(finding.blocking for finding in self.findings)


def header_length(first_bytes: bytes) -> int:
    """N from the first 8 bytes."""
    return struct.unpack("<Q", first_bytes[:8])[0]


def check_safetensors_header(prefix: bytes, file_size: int, file: str = "model.safetensors") -> SafetensorsReport:
    """Validate a file from `prefix` (its first 8 + N bytes, or the whole file if shorter) and its total size."""
    report = SafetensorsReport(file=file, file_size=file_size)
    left_off = 0

    def add(code: str, message: str, subject: str | None = None) -> None:
        nonlocal left_off
        if len(report.findings) >= MAX_FINDINGS_PER_FILE:
            left_off += 1
            return
        report.findings.append(Finding(check="safetensors", code=code, file=file, subject=subject, message=message))

    _check_header(report, prefix, file_size, add)
    if left_off:
        report.findings.append(Finding(check="safetensors", code="more_findings", file=file,
                                       message=f"{left_off} more findings in this header not listed"))
    report.layers = layer_indices(report.tensor_names)
    return report


def _check_header(report: SafetensorsReport, prefix: bytes, file_size: int, add: Callable[..., None]) -> None:
    if file_size < 8 or len(prefix) < 8:
        add("too_small", f"{file_size} bytes: too short to hold the 8-byte header length")
        return
    length = header_length(prefix)
    report.header_length = length
    if length == 0 or length > MAX_HEADER_BYTES:
        add("header_length_out_of_bounds", f"header length {length} is outside 1..{MAX_HEADER_BYTES}")
        return
    if 8 + length > file_size:
        add("header_beyond_file", f"header length {length} runs past the end of the {file_size}-byte file")
        return
    if len(prefix) < 8 + length:
        raise ValueError(f"prefix holds {len(prefix)} bytes; the header needs {8 + length}")

    header = _parse_header(prefix[8 : 8 + length], add)
    if header is None:
        return
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            report.metadata = metadata
        else:
            add("bad_metadata", "__metadata__ must map strings to strings")
    if not header:
        add("no_tensors", "the header lists no tensors")
        return

    data_size = file_size - 8 - length
    spans: list[tuple[int, int, str]] = []
    tensor_problems = 0
    for name, entry in header.items():
        problem = _tensor_problem(entry)
        if problem is None:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            bits = prod(shape) * DTYPE_BITS[dtype]
            if bits % 8 or end - begin != bits // 8:
                problem = (f"{dtype} {shape} needs {_bytes(bits)} bytes but data_offsets [{begin}, {end}] "
                           f"span {end - begin}")
        if problem is not None:
            tensor_problems += 1
            if tensor_problems <= MAX_TENSOR_FINDINGS:
                add("bad_tensor", f"tensor {name!r}: {problem}", subject=name)
            continue
        report.tensor_names.append(name)
        spans.append((begin, end, name))
        count = prod(shape)
        report.parameter_count += count
        report.parameters_by_dtype[dtype] = report.parameters_by_dtype.get(dtype, 0) + count
    report.tensor_count = len(report.tensor_names)
    if tensor_problems > MAX_TENSOR_FINDINGS:
        add("bad_tensor", f"{tensor_problems - MAX_TENSOR_FINDINGS} more malformed tensors not listed")
    if tensor_problems:
        return report  # offsets cannot be judged while some tensors are unreadable

    _check_layout(sorted(spans), data_size, add)


def _parse_header(raw: bytes, add: Callable[..., None]) -> dict | None:
    if not raw.startswith(b"{"):
        add("header_not_json", "the header does not start with '{'")
        return None
    duplicates: list[str] = []

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        seen: dict[str, object] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "), object_pairs_hook=no_duplicates)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        add("header_not_json", f"the header is not valid JSON: {exc}")
        return None
    except RecursionError:
        add("header_not_json", "the header nests JSON too deep to parse")
        return None
    if not isinstance(header, dict):
        add("header_not_json", "the header is not a JSON object")
        return None
    for name in sorted(set(duplicates)):
        add("duplicate_tensor", f"tensor {name!r} appears more than once in the header", subject=name)
    return header


def _bytes(bits: int) -> str:
    """bits as bytes, exactly ('12', '1.5'), for sizes far beyond a float's range too."""
    return f"{bits // 8}" + (f".{bits % 8 * 125:03d}".rstrip("0") if bits % 8 else "")


def _tensor_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "entry is not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a list of non-negative integers"
    if len(shape) > MAX_RANK or any(d > MAX_DIMENSION for d in shape):
        return f"shape has {len(shape)} dimensions or one beyond 64 bits (at most {MAX_RANK} of up to 2**64 - 1)"
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        return f"data_offsets {offsets!r} is not [begin, end]"
    if offsets[1] > MAX_DIMENSION:
        return f"data_offsets {offsets!r} end beyond 64 bits"
    if not 0 <= offsets[0] <= offsets[1]:
        return f"data_offsets {offsets!r} must satisfy 0 <= begin <= end"
    return None


def _check_layout(spans: list[tuple[int, int, str]], data_size: int, add: Callable[..., None]) -> None:
    """Sorted spans must tile [0, data_size) exactly."""
    position = 0
    for begin, end, name in spans:
        if begin > position:
            add("offsets_gap", f"{begin - position} unused bytes before tensor {name!r} (offset {begin})", subject=name)
        elif begin < position:
            add("offsets_overlap", f"tensor {name!r} starts at {begin}, inside the previous tensor (ends {position})",
                subject=name)
        position = max(position, end)
    if position > data_size:
        add("data_beyond_file", f"tensors need {position} data bytes but the file holds {data_size}: "
                                "the file is truncated")
    elif position < data_size:
        add("trailing_bytes", f"{data_size - position} bytes after the last tensor are not part of any tensor")


def layer_indices(tensor_names: list[str]) -> dict[str, list[int]]:
    """Name stem -> sorted layer indices: {'model.layers': [0, 1]} for `model.layers.0.mlp.up_proj.weight`, ...
    Names without a numbered block are skipped; an empty dict means the checkpoint names layers some other way."""
    found: dict[str, set[int]] = {}
    for name in tensor_names:
        match = LAYER_NAME.match(name)
        if match:
            found.setdefault(match.group(1), set()).add(int(match.group(2)))
    largest = sorted(found, key=lambda stem: (-len(found[stem]), stem))[:MAX_LAYER_STEMS]
    return {stem: sorted(found[stem])[:MAX_LAYER_INDICES] for stem in largest}


def merge_layer_indices(shards: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    """The layers of a sharded checkpoint: per stem, the union of what each shard holds."""
    merged: dict[str, set[int]] = {}
    for layers in shards:
        for stem, indices in layers.items():
            merged.setdefault(stem, set()).update(indices)
    return {stem: sorted(indices)[:MAX_LAYER_INDICES] for stem, indices in merged.items()}


async def read_safetensors_header(read_range: ReadRange, file_size: int,
                                  file: str = "model.safetensors") -> SafetensorsReport:
    """Fetch only the header through `read_range(offset, length)` (sync or async) and validate it."""
    return check_safetensors_header(await read_header_bytes(read_range, file_size), file_size, file)


async def read_header_bytes(read_range: ReadRange, file_size: int) -> bytes:
    """The bytes check_safetensors_header needs: the 8-byte length, then the header only when its length is sane
    (a header claiming 100 GB is reported from those 8 bytes, never fetched)."""
    first = await _read(read_range, 0, min(8, file_size)) if file_size > 0 else b""
    if len(first) < 8:
        return first
    length = header_length(first)
    if length == 0 or length > MAX_HEADER_BYTES or 8 + length > file_size:
        return first
    return first + await _read(read_range, 8, length)


async def _read(read_range: ReadRange, offset: int, length: int) -> bytes:
    data = read_range(offset, length)
    if inspect.isawaitable(data):
        data = await data
    if len(data) != length:
        raise IOError(f"read_range({offset}, {length}) returned {len(data)} bytes")
    return bytes(data)


def check_safetensors_file(path: Path | str, file: str | None = None) -> SafetensorsReport:
    """The same check for a local file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        first = handle.read(8)
        if len(first) == 8:
            length = header_length(first)
            if 0 < length <= MAX_HEADER_BYTES and 8 + length <= size:
                first += handle.read(length)
    return check_safetensors_header(first, size, file or path.name)


def check_safetensors_index(index: dict, shards: dict[str, SafetensorsReport],
                            file: str = "model.safetensors.index.json") -> list[Finding]:
    """A sharded model's index must name existing shards, and each tensor must sit in the shard it names."""
    findings: list[Finding] = []
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        return [Finding(check="safetensors", code="bad_index", file=file, message="index has no weight_map")]
    names_by_shard = {shard: set(report.tensor_names) for shard, report in shards.items()}
    for shard in sorted({str(value) for value in weight_map.values()} - set(shards)):
        findings.append(Finding(check="safetensors", code="missing_shard", file=file, subject=shard,
                                message=f"index names shard {shard!r}, which is not among the files"))
    missing = [name for name, shard in weight_map.items()
               if shard in names_by_shard and name not in names_by_shard[shard]]
    for name in missing[:MAX_TENSOR_FINDINGS]:
        findings.append(Finding(check="safetensors", code="missing_tensor", file=file, subject=name,
                                message=f"index places {name!r} in {weight_map[name]!r}, which does not hold it"))
    unindexed = sorted(set().union(*names_by_shard.values()) - set(weight_map)) if names_by_shard else []
    if unindexed:
        findings.append(Finding(check="safetensors", code="unindexed_tensors", file=file, blocking=False,
                                subject=unindexed[0],
                                message=f"{len(unindexed)} tensors in the shards are not in the index "
                                        f"(e.g. {unindexed[0]!r}); loaders will ignore them"))
    return findings
