"""The generators produce what the scanners and the workflow tests rely on."""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
from pathlib import Path

from tests.model_files import (
    TinyLlamaSpec,
    eicar_bytes,
    malicious_pickle_bytes,
    spec_for_total_bytes,
    state_dict_pickle,
    write_tiny_llama,
)


def test_eicar_is_the_standard_test_file():
    assert hashlib.md5(eicar_bytes()).hexdigest() == "44d88612fea8a8f36de82e1278abb02f"


def test_tiny_llama_folder_is_complete_and_consistent(tmp_path: Path):
    model = write_tiny_llama(tmp_path / "m")
    assert model.files == ["LICENSE", "config.json", "generation_config.json", "model.safetensors",
                           "tokenizer.json", "tokenizer_config.json"]
    tokenizer = json.loads((model.path / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == model.spec.vocab_size
    config = json.loads((model.path / "config.json").read_text())
    assert config["num_hidden_layers"] == model.spec.num_layers and config["model_type"] == "llama"
    header_size = 8 + int.from_bytes((model.path / "model.safetensors").read_bytes()[:8], "little")
    assert (model.path / "model.safetensors").stat().st_size == header_size + model.spec.weight_bytes
    assert model.total_bytes == sum((model.path / name).stat().st_size for name in model.files)


def test_same_seed_same_bytes_and_sizes_scale(tmp_path: Path):
    first = write_tiny_llama(tmp_path / "a")
    second = write_tiny_llama(tmp_path / "b")
    assert (first.path / "model.safetensors").read_bytes() == (second.path / "model.safetensors").read_bytes()
    bigger = TinyLlamaSpec(num_layers=8)
    assert bigger.parameter_count > first.spec.parameter_count


def test_benchmark_sizing_lands_near_the_target():
    for target in (2 * 10**9, 5 * 10**9):
        spec = spec_for_total_bytes(target)
        assert abs(spec.weight_bytes - target) / target < 0.05


def test_generated_pickles_are_well_formed():
    # pickletools.dis validates opcode arguments and the stack/mark discipline without loading anything
    for data in (malicious_pickle_bytes(style="global"), malicious_pickle_bytes(style="stack_global"),
                 malicious_pickle_bytes(style="memo"), state_dict_pickle({"w": ("BF16", [2, 3])}, "id")):
        pickletools.dis(data, out=io.StringIO())
