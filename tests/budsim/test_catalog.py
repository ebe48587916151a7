import csv
import json
from pathlib import Path

import pytest

from budsim.catalog import get_gpu, get_model, list_gpus
from budsim.constraints import memory_breakdown
from budsim.errors import InvalidRequest
from budsim.schemas import ServingConfig
from core.model_facts import architecture_from_config

SEED_NAMES = [
    "nvidia-a100-40gb",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
    "nvidia-h100-pcie",
    "nvidia-h200",
    "nvidia-l40s",
    "nvidia-l4",
    "nvidia-a10g",
    "nvidia-b200",
]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_gpu_is_known(name):
    spec = get_gpu(name)
    assert spec.name == name
    assert spec.memory_bytes > 20 * 2**30 and spec.hbm_bandwidth > 2e11 and spec.bf16_tflops > 50


@pytest.mark.parametrize(
    "alias, name",
    [
        ("h100_sxm", "nvidia-h100-80gb"),
        ("H200_SXM", "nvidia-h200"),
        ("a100_sxm", "nvidia-a100-80gb"),
        ("b200_sxm", "nvidia-b200"),
        ("l40s", "nvidia-l40s"),
        ("gb200", "nvidia-gb200"),
    ],
)
def test_perf_data_system_names_are_aliases(alias, name):
    assert get_gpu(alias).name == name


def test_h100_figures_match_the_spec_sheet():
    h100 = get_gpu("h100_sxm")
    assert h100.memory_gib == 80 and h100.hbm_bandwidth == 3.35e12
    assert h100.tflops("fp8") == 1979 and h100.tflops("bf16") == 989
    assert h100.tflops("fp4") == 1979  # no fp4 tensor cores on Hopper: falls back to fp8
    assert get_gpu("a100_sxm").tflops("fp8") == 312  # no fp8 on Ampere either


def test_unknown_gpu_lists_the_known_names():
    with pytest.raises(InvalidRequest) as error:
        get_gpu("nvidia-rtx-toaster")
    assert error.value.field == "gpu_type"
    for spec in list_gpus():
        assert spec.name in error.value.message
    assert "h100_sxm" in error.value.message


def test_every_model_of_the_perf_data_is_in_the_catalog(silicon_fixture):
    # the fixture holds rows of every model in the measured data
    with open(silicon_fixture, newline="") as handle:
        paths = {row["model_path"] for row in csv.DictReader(handle)}
    assert len(paths) >= 10
    for path in paths:
        assert get_model(path).parameter_count > 1e9


@pytest.mark.parametrize(
    "hf_id, layers, experts",
    [
        ("meta-llama/Llama-3.1-405B-Instruct", 126, 0),
        ("mistralai/Mistral-7B-Instruct-v0.3", 32, 0),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 32, 8),
        ("Qwen/Qwen2.5-72B-Instruct", 80, 0),
        ("Qwen/Qwen3-30B-A3B", 48, 128),
        ("Qwen3-32B", 64, 0),
    ],
)
def test_common_models_and_bare_names(hf_id, layers, experts):
    model = get_model(hf_id)
    assert (model.num_layers, model.num_experts) == (layers, experts)


def test_deepseek_uses_mla_so_its_kv_cache_is_small():
    deepseek = get_model("deepseek-ai/DeepSeek-V3")
    assert deepseek.kv_lora_rank == 512 and deepseek.qk_rope_head_dim == 64


def test_unknown_model_is_invalid_request():
    with pytest.raises(InvalidRequest) as error:
        get_model("someone/not-a-model")
    assert error.value.field == "model" and "meta-llama/Llama-3.1-8B" in error.value.message


def test_architecture_from_a_config_json():
    config = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "torch_dtype": "bfloat16",
    }
    arch = architecture_from_config(config)
    catalog = get_model("mistralai/Mixtral-8x7B-v0.1")
    assert (arch.num_experts, arch.experts_per_token, arch.head_dim) == (8, 2, 128)
    assert abs(arch.parameter_count - catalog.parameter_count) / catalog.parameter_count < 0.02


GPT_OSS_20B_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
    "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4, "vocab_size": 201088,
    "max_position_embeddings": 131072, "sliding_window": 128,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "attention_bias": True,
    "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096},
    "quantization_config": {"quant_method": "mxfp4"}, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
DEEPSEEK_V3_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "configs" / "deepseek_v3.json"


@pytest.mark.parametrize("hf_id, config", [
    ("openai/gpt-oss-20b", GPT_OSS_20B_CONFIG),
    ("deepseek-ai/DeepSeek-V3", json.loads(DEEPSEEK_V3_CONFIG.read_text())),
])
def test_catalog_entries_size_the_kv_cache_as_their_config_json_does(hf_id, config):
    """`bud sim --model <id>` and `bud sim --model config.json` agree on everything the memory fit reads."""
    catalog, parsed = get_model(hf_id), architecture_from_config(config)
    kv_facts = ("num_layers", "num_kv_heads", "kv_lora_rank", "qk_rope_head_dim", "full_attention_layers",
                "sliding_window", "num_experts", "experts_per_token", "dtype")
    assert {f: getattr(catalog, f) for f in kv_facts} == {f: getattr(parsed, f) for f in kv_facts}
    assert parsed.parameter_count == pytest.approx(catalog.parameter_count, rel=0.001)
    config = ServingConfig(tensor_parallel_size=8, max_num_seqs=32, max_model_len=32768)
    gpu = get_gpu("nvidia-h200")
    assert memory_breakdown(catalog, gpu, config).kv_cache == memory_breakdown(parsed, gpu, config).kv_cache
