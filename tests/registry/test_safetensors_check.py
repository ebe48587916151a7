"""safetensors header validation and parameter counting, cross-checked with the safetensors library."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from registry.safetensors_check import (
    check_safetensors_file,
    check_safetensors_header,
    check_safetensors_index,
    layer_indices,
    merge_layer_indices,
    read_safetensors_header,
)
from tests.model_files import TinyLlamaSpec, write_tiny_llama, write_truncated_safetensors


def craft(header: dict | bytes, data_size: int, trailing: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data_size) + trailing


def check_bytes(blob: bytes):
    return check_safetensors_header(blob, len(blob), "t.safetensors")


def codes(report) -> list[str]:
    return [finding.code for finding in report.findings]


def test_generated_model_is_valid_and_counts_match_the_library(tmp_path: Path):
    spec = TinyLlamaSpec(dtype="F16")  # numpy reads F16 (it has no bfloat16)
    model = write_tiny_llama(tmp_path / "m", spec)
    report = check_safetensors_file(model.path / "model.safetensors")
    assert report.ok, report.findings
    with safe_open(model.path / "model.safetensors", "np") as handle:
        library_count = sum(handle.get_tensor(name).size for name in handle.keys())
        assert sorted(report.tensor_names) == sorted(handle.keys())
    assert report.parameter_count == library_count == spec.parameter_count
    assert report.parameters_by_dtype == {"F16": spec.parameter_count}
    assert report.metadata == {"format": "pt"}


def test_truncated_file_is_reported(tiny_model, tmp_path: Path):
    truncated = write_truncated_safetensors(tiny_model.path / "model.safetensors", tmp_path / "cut.safetensors")
    assert codes(check_safetensors_file(truncated)) == ["data_beyond_file"]
    with pytest.raises(Exception):  # the library agrees that the file is broken
        with safe_open(truncated, "np") as handle:
            list(handle.keys())


def test_appended_bytes_are_reported(tiny_model, tmp_path: Path):
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes((tiny_model.path / "model.safetensors").read_bytes() + b"#!/bin/sh\nrm -rf /\n")
    assert codes(check_safetensors_file(padded)) == ["trailing_bytes"]


@pytest.mark.parametrize("blob,expected", [
    (b"\x01\x02", "too_small"),
    (struct.pack("<Q", 0) + b"{}", "header_length_out_of_bounds"),
    (struct.pack("<Q", 200_000_000) + b"{}", "header_length_out_of_bounds"),
    (struct.pack("<Q", 1000) + b"{}", "header_beyond_file"),
    (craft(b"[1, 2]", 0), "header_not_json"),
    (craft(b"{not json", 0), "header_not_json"),
    (craft(b" {}", 0), "header_not_json"),
    (craft({}, 0), "no_tensors"),
    (craft({"__metadata__": {"format": 1}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 4),
     "bad_metadata"),
])
def test_malformed_headers(blob: bytes, expected: str):
    assert expected in codes(check_bytes(blob))


@pytest.mark.parametrize("entry,problem", [
    ({"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}, "unknown dtype"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}, "begin <= end"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "needs 12 bytes"),
    ({"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}, "needs 1.5 bytes"),
])
def test_bad_tensor_entries(entry: dict, problem: str):
    report = check_bytes(craft({"t": entry}, 8))
    assert codes(report) == ["bad_tensor"] and problem in report.findings[0].message


def test_gaps_overlaps_and_duplicates():
    gap = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
           "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
    assert codes(check_bytes(craft(gap, 12))) == ["offsets_gap"]
    late_start = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    assert codes(check_bytes(craft(late_start, 8))) == ["offsets_gap"]
    overlap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    assert codes(check_bytes(craft(overlap, 8))) == ["offsets_overlap"]
    duplicate = (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
                 b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    assert codes(check_bytes(craft(duplicate, 4))) == ["duplicate_tensor"]


def test_sub_byte_and_empty_tensors_are_counted():
    header = {"packed": {"dtype": "F4", "shape": [4, 2], "data_offsets": [0, 4]},
              "empty": {"dtype": "BF16", "shape": [0, 5], "data_offsets": [4, 4]},
              "scalar": {"dtype": "F64", "shape": [], "data_offsets": [4, 12]}}
    report = check_bytes(craft(header, 12))
    assert report.ok, report.findings
    assert report.parameter_count == 8 + 0 + 1
    assert report.tensor_count == 3


async def test_header_is_read_through_ranges_only(tiny_model):
    path = tiny_model.path / "model.safetensors"
    size = path.stat().st_size
    requested: list[tuple[int, int]] = []

    async def read_range(offset: int, length: int) -> bytes:  # what an S3 range GET does
        requested.append((offset, length))
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    report = await read_safetensors_header(read_range, size, "model.safetensors")
    assert report.ok and report.parameter_count == tiny_model.parameter_count
    assert len(requested) == 2 and sum(length for _, length in requested) == 8 + report.header_length
    assert sum(length for _, length in requested) < size / 10


async def test_bad_length_is_reported_without_a_second_read():
    calls: list[int] = []

    def read_range(offset: int, length: int) -> bytes:
        calls.append(offset)
        return struct.pack("<Q", 10**12)[:length]

    report = await read_safetensors_header(read_range, 4096)
    assert codes(report) == ["header_length_out_of_bounds"] and calls == [0]


def test_sharded_model_index(tmp_path: Path):
    model = write_tiny_llama(tmp_path / "sharded", shards=3)
    index = json.loads((model.path / "model.safetensors.index.json").read_text())
    reports = {name: check_safetensors_file(model.path / name) for name in model.files
               if name.endswith(".safetensors")}
    assert len(reports) == 3 and all(report.ok for report in reports.values())
    assert sum(report.parameter_count for report in reports.values()) == model.parameter_count
    assert check_safetensors_index(index, reports) == []

    missing_shard = dict(reports)
    missing_shard.pop("model-00002-of-00003.safetensors")
    assert "missing_shard" in [f.code for f in check_safetensors_index(index, missing_shard)]
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors"
    wrong_place = check_safetensors_index(index, reports)
    assert any(f.code == "missing_tensor" and f.subject == "model.norm.weight" for f in wrong_place)


def test_hostile_headers_end_in_bounded_findings(tmp_path: Path):
    """JSON nested too deep, integers of 5,000 digits, shapes beyond 64 bits, thousands of broken spans: each is a
    finding, and one header never yields more than MAX_FINDINGS_PER_FILE of them (plus one counting the rest)."""
    import registry.safetensors_check as module

    nested = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert codes(check_bytes(craft(nested, 0))) == ["header_not_json"]
    assert codes(check_bytes(craft(b'{"a": ' + b"9" * 5000 + b"}", 0))) == ["header_not_json"]
    huge = {"t": {"dtype": "F32", "shape": [2**64] * 3, "data_offsets": [0, 4]}}
    assert codes(check_bytes(craft(huge, 4))) == ["bad_tensor"]
    gaps = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [2 * i + 1, 2 * i + 2]} for i in range(5000)}
    report = check_bytes(craft(gaps, 10_000))
    assert len(report.findings) == module.MAX_FINDINGS_PER_FILE + 1
    assert report.findings[-1].code == "more_findings" and "4975 more" in report.findings[-1].message


def test_tensor_names_a_megabyte_long_are_shortened_in_findings():
    name = "x" * 1_000_000
    report = check_bytes(craft({name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, 8))
    [finding] = report.findings
    assert len(finding.message) <= 500 and len(finding.subject) <= 300 and finding.subject.endswith("…")


def test_layer_indices_per_name_stem(tmp_path: Path):
    model = write_tiny_llama(tmp_path / "m", TinyLlamaSpec(num_layers=3), shards=2)
    shards = [check_safetensors_file(path) for path in sorted(model.path.glob("*.safetensors"))]
    assert merge_layer_indices([shard.layers for shard in shards]) == {"model.layers": [0, 1, 2]}
    assert layer_indices(["language_model.model.layers.0.q.weight", "language_model.model.layers.1.q.weight",
                          "vision_tower.encoder.layers.0.fc.weight", "transformer.h.7.attn.weight",
                          "model.layers.0.mlp.experts.5.w1", "embed_tokens.weight"]) == {
        "language_model.model.layers": [0, 1], "model.layers": [0], "transformer.h": [7],
        "vision_tower.encoder.layers": [0]}
    assert layer_indices(["wte.weight", "decoder.fc1.weight"]) == {}
