"""Model checks a runtime fails on at load, and the KV-cache sizing check, without starting a process."""

from __future__ import annotations

import pytest

from runtime.loader import ModelLoadError, check_model_source, check_weights_fit, max_position_embeddings
from runtime.server import SimRuntime
from runtime.settings import RuntimeSettings


def make_model(tmp_path, files: dict[str, bytes | int]):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name, content in files.items():
        path = model_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            with open(path, "wb") as handle:
                handle.truncate(content)  # sparse file of that apparent size
        else:
            path.write_bytes(content)
    return model_dir


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"model.safetensors": b"x"}, "format_not_supported"),  # no config.json
        ({"config.json": b"{}", "model.onnx": b"x"}, "format_not_supported"),
        ({"config.json": b"{}", "tf_model.h5": b"x"}, "format_not_supported"),
    ],
)
def test_unsupported_layouts(tmp_path, files, reason):
    with pytest.raises(ModelLoadError) as caught:
        check_model_source(str(make_model(tmp_path, files)))
    assert caught.value.reason == reason


def test_missing_path_and_hub_names(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        check_model_source(str(tmp_path / "nowhere"))
    assert caught.value.reason == "path_not_accessible"
    assert check_model_source("meta-llama/Llama-3.1-8B") is None  # a hub name: nothing to check locally


def test_supported_layouts_and_context_length(tmp_path):
    model_dir = make_model(
        tmp_path, {"config.json": b'{"max_position_embeddings": 8192}', "shards/model-00001.safetensors": b"x"}
    )
    assert check_model_source(str(model_dir)) == model_dir
    assert max_position_embeddings(model_dir) == 8192


def test_weights_must_fit_gpu_memory_split_over_gpus(tmp_path):
    model_dir = make_model(tmp_path, {"config.json": b"{}", "model.safetensors": 30 * 10**9})
    check_weights_fit(model_dir, gpu_memory_gb=80, utilization=0.9, gpus=1)
    check_weights_fit(model_dir, gpu_memory_gb=24, utilization=0.9, gpus=2)  # 15 GB per GPU of 21.6 usable
    with pytest.raises(ModelLoadError) as caught:
        check_weights_fit(model_dir, gpu_memory_gb=24, utilization=0.9, gpus=1)
    assert caught.value.reason == "insufficient_gpu_memory"


def test_kv_cache_smaller_than_the_context_refuses_to_start():
    with pytest.raises(ModelLoadError) as caught:
        SimRuntime(RuntimeSettings(model="m", max_model_len=8192, kv_cache_tokens=4096))
    assert caught.value.reason == "insufficient_gpu_memory"
    assert "KV cache (4096)" in caught.value.message
    assert SimRuntime(RuntimeSettings(model="m", max_model_len=4096, kv_cache_tokens=4096)).max_model_len == 4096
