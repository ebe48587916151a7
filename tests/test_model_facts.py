"""One config.json parser for every path: registration stores the facts the optimizer sizes from, `bud sim` reads
the same facts from a config.json path, and hostile configs are clear errors, never crashes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from budsim.catalog import get_gpu
from budsim.constraints import check_config, memory_breakdown
from budsim.schemas import ServingConfig
from cli.sim import _load_model as bud_sim_model
from control.errors import Conflict
from control.planning import available_facts
from core.model_facts import (
    ConfigError,
    ModelArchitecture,
    architecture_from_config,
    load_config_json,
    weights_are_packed,
)
from core.precision import find_precision, precision_of, quantized_precision
from registry.model_config import registration_facts
from tests.model_files import write_tiny_llama
from tests.registry_helpers import register_and_wait, upload

CONFIGS = Path(__file__).resolve().parent / "fixtures" / "configs"
# (fixture, tensor parallel size, max_model_len) with 16 sequences on one replica of H200s
SERVING = {
    "deepseek_v3": (8, 32768),
    "gemma2_9b": (1, 8192),
    "mistral_7b_v0_1": (1, 32768),
    "llama_3_1_8b": (1, 32768),
}
H200 = "nvidia-h200"


def fixture(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def serving(name: str, **changes) -> ServingConfig:
    tp, context = SERVING[name]
    fields = dict(tensor_parallel_size=tp, pipeline_parallel_size=1, max_num_seqs=16, max_model_len=context,
                  gpu_memory_utilization=0.9, replicas=1, runtime="vllm")
    return ServingConfig(**(fields | changes))


def stored_row(facts: dict, name: str = "m") -> SimpleNamespace:
    """A models row as the optimizer's request builder reads it (facts: JSONB, parsed)."""
    return SimpleNamespace(name=name, status="AVAILABLE", facts=json.loads(json.dumps(facts)))


def registered(config: dict, weights_parameter_count: int | None = None) -> ModelArchitecture:
    """What RegisterModel stores (facts as JSON in PostgreSQL) and what the optimizer reads back from the row."""
    facts, findings = registration_facts(config, weights_parameter_count=weights_parameter_count)
    assert facts is not None, findings
    return available_facts(stored_row(facts.model_dump(mode="json")))


def kv_bytes_per_token(facts: ModelArchitecture, name: str) -> float:
    config = serving(name)
    return memory_breakdown(facts, get_gpu(H200), config).kv_cache / (config.max_num_seqs * config.max_model_len)


@pytest.mark.parametrize("name", sorted(SERVING))
def test_registration_and_bud_sim_give_the_same_facts_and_memory_fit(name: str):
    stored = registered(fixture(name))
    simulated = bud_sim_model(str(CONFIGS / f"{name}.json"))
    assert stored == simulated
    gpu, config = get_gpu(H200), serving(name)
    assert memory_breakdown(stored, gpu, config) == memory_breakdown(simulated, gpu, config)
    assert check_config(stored, H200, config, 8) == check_config(simulated, H200, config, 8)
    # a context far beyond what fits gives the same verdict through both paths too
    crowded = serving(name, max_num_seqs=256)
    assert memory_breakdown(stored, gpu, crowded).fits == memory_breakdown(simulated, gpu, crowded).fits


def test_a_registered_deepseek_v3_is_sized_with_its_mla_latent_cache():
    stored = registered(fixture("deepseek_v3"))
    assert (stored.kv_lora_rank, stored.qk_rope_head_dim, stored.num_experts, stored.experts_per_token) == (
        512, 64, 256, 8)
    assert stored.dtype == "fp8" and stored.quantization == "fp8"
    # MLA caches one 512-wide latent plus a 64-wide rotary key per layer and token (fp8 cache: one byte each),
    # held whole by every tensor-parallel rank
    assert kv_bytes_per_token(stored, "deepseek_v3") == 61 * (512 + 64) * 1.0
    plain = stored.model_copy(update={"kv_lora_rank": 0, "qk_rope_head_dim": 0})
    # plain attention would cache a key and a value per head: 128 heads x 192 dims, split over 8 ranks
    assert kv_bytes_per_token(plain, "deepseek_v3") == 61 * 2 * 128 * 192 * 1.0 / 8
    gpu, config = get_gpu(H200), serving("deepseek_v3")
    assert memory_breakdown(stored, gpu, config).fits
    assert not memory_breakdown(plain, gpu, config).fits


def test_sliding_window_layers_hold_only_their_window():
    gemma = registered(fixture("gemma2_9b"))
    assert (gemma.full_attention_layers, gemma.sliding_window) == (21, 4096)  # Gemma 2 alternates
    per_layer = 2 * 8 * 256 * 2.0  # K and V, 8 KV heads of 256, bf16 cache
    config = serving("gemma2_9b")
    cache = memory_breakdown(gemma, get_gpu(H200), config).kv_cache
    assert cache == 16 * (21 * 8192 + 21 * 4096) * per_layer
    mistral = registered(fixture("mistral_7b_v0_1"))
    assert (mistral.full_attention_layers, mistral.sliding_window) == (0, 4096)  # every layer slides
    assert kv_bytes_per_token(mistral, "mistral_7b_v0_1") == 32 * 2 * 8 * 128 * 2.0 * 4096 / 32768


def test_a_window_as_long_as_the_context_is_plain_attention():
    qwen_style = {**fixture("llama_3_1_8b"), "model_type": "qwen2", "sliding_window": 131072,
                  "use_sliding_window": False, "max_window_layers": 28}
    assert (architecture_from_config(qwen_style).full_attention_layers,
            architecture_from_config(qwen_style).sliding_window) == (None, None)
    long_window = {**fixture("mistral_7b_v0_1"), "sliding_window": 32768}
    assert architecture_from_config(long_window).sliding_window is None


def test_layer_types_decide_which_layers_slide():
    config = {**fixture("llama_3_1_8b"), "num_hidden_layers": 4, "sliding_window": 128,
              "layer_types": ["sliding_attention", "full_attention"] * 2}
    facts = architecture_from_config(config)
    assert (facts.full_attention_layers, facts.sliding_window) == (2, 128)
    linear = {**config, "layer_types": ["linear_attention"] * 3 + ["full_attention"]}
    assert (architecture_from_config(linear).full_attention_layers, architecture_from_config(linear).sliding_window) \
        == (1, None)
    with pytest.raises(ConfigError) as error:
        architecture_from_config({**config, "layer_types": ["full_attention"]})
    assert error.value.key == "layer_types"


def test_stored_facts_the_optimizer_cannot_read_are_a_conflict_not_a_crash():
    facts = registered(fixture("llama_3_1_8b")).model_dump(mode="json")
    with pytest.raises(Conflict) as error:
        available_facts(stored_row({**facts, "dtype": "float64"}, name="old-model"))
    assert error.value.field == "model_id" and "old-model" in str(error.value) and "register it again" in str(
        error.value)


@pytest.mark.parametrize("spelling", ["bfloat16", "bf16", "BF16", "torch.bfloat16"])
def test_dtype_spellings_are_one_precision(spelling: str):
    facts = architecture_from_config({**fixture("llama_3_1_8b"), "torch_dtype": spelling})
    assert facts.dtype == "bfloat16" and facts.precision.name == "bf16" and precision_of(spelling) == "bf16"
    assert ModelArchitecture.model_validate({**facts.model_dump(), "dtype": spelling}).dtype == "bfloat16"


@pytest.mark.parametrize("quantization, precision, packed", [
    ({"quant_method": "fp8"}, "fp8", False),
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, "int4", True),
    ({"quant_method": "gptq", "bits": 8}, "int8", True),
    ({"quant_method": "gptq"}, "int4", True),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "int4", True),
    ({"quant_method": "mxfp4"}, "fp4", True),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "fp4", True),
    ({"quant_method": "compressed-tensors", "format": "float-quantized"}, "fp8", False),
])
def test_quantization_methods_decide_the_weight_precision(quantization: dict, precision: str, packed: bool):
    config = {**fixture("llama_3_1_8b"), "torch_dtype": "float16", "quantization_config": quantization}
    facts = architecture_from_config(config, parameter_count=1_000_000_000)
    assert facts.precision.name == precision and weights_are_packed(config) is packed
    assert quantized_precision(quantization).name == precision
    # packed weights' element count is not the parameter count: the config's estimate stands in for it
    assert facts.parameter_count == (8_030_261_248 if packed else 1_000_000_000)
    gpu, config = get_gpu(H200), serving("llama_3_1_8b")
    assert memory_breakdown(facts, gpu, config).weights == pytest.approx(
        facts.parameter_count * find_precision(precision).weight_bytes)


def test_an_unknown_dtype_is_named_not_guessed():
    with pytest.raises(ConfigError) as error:
        architecture_from_config({**fixture("llama_3_1_8b"), "torch_dtype": "float128"})
    assert error.value.key == "torch_dtype" and "float128" in str(error.value)
    facts, findings = registration_facts({**fixture("llama_3_1_8b"), "dtype": "float128", "torch_dtype": None},
                                         weights_parameter_count=None)
    assert facts is None and [(f.code, f.subject) for f in findings] == [("config_incomplete", "dtype")]


HOSTILE_VALUES = [None, -1, 0, 10**30, 1e300, math.nan, math.inf, "32", True, [], {}, [1, 2], {"a": 1}, 3.5]


@pytest.mark.parametrize("name", sorted(SERVING))
def test_every_hostile_value_of_every_key_is_facts_or_a_config_error(name: str):
    """The registration of a user-supplied config never raises anything but ConfigError, and facts it accepts
    are sane enough to size."""
    base = fixture(name)
    nested_keys = [("quantization_config", "quant_method"), ("quantization_config", "bits"),
                   ("rope_scaling", "factor"), ("rope_scaling", "original_max_position_embeddings")]
    for key in [*base, "layer_types", "mlp_only_layers", "decoder_sparse_step", "text_config",
                "sliding_window_pattern", "full_attention_interval", "head_dim"]:
        for value in HOSTILE_VALUES:
            _judge({**base, key: value})
    for outer, inner in nested_keys:
        for value in HOSTILE_VALUES:
            _judge({**base, outer: {**(base.get(outer) or {}), inner: value}})


def _judge(config: dict) -> None:
    try:
        facts = architecture_from_config(config, parameter_count=None)
    except ConfigError as error:
        assert error.key and str(error)
        return
    assert facts.parameter_count < 10**15 and facts.num_layers <= 4096
    memory_breakdown(facts, get_gpu(H200), ServingConfig(tensor_parallel_size=1, pipeline_parallel_size=1,
                                                         max_num_seqs=1, max_model_len=1024, replicas=1))
    registration_facts(config, weights_parameter_count=12345, declared_parameter_count=7,
                       declared_context_length=4096)


@pytest.mark.parametrize("change, key", [
    ({"num_hidden_layers": 10**12}, "num_hidden_layers"),  # would loop for hours
    ({"hidden_size": "4096"}, "hidden_size"),
    ({"num_key_value_heads": 7}, "num_key_value_heads"),  # does not divide 32 heads
    ({"num_key_value_heads": 64}, "num_key_value_heads"),  # more KV heads than heads
    ({"vocab_size": 2**40}, "vocab_size"),
    ({"num_local_experts": 8}, "num_experts_per_tok"),  # experts without a routing width
    ({"num_local_experts": 8, "num_experts_per_tok": 9}, "num_experts_per_tok"),
    ({"sliding_window": -5}, "sliding_window"),
    ({"max_position_embeddings": 1.5}, "max_position_embeddings"),
])
def test_absurd_values_are_config_errors_naming_the_key(change: dict, key: str):
    with pytest.raises(ConfigError) as error:
        architecture_from_config({**fixture("llama_3_1_8b"), **change})
    assert error.value.key == key and f"'{key}'" in str(error.value)


@pytest.mark.parametrize("raw", ["[" * 100_000, "[1, 2]", "null", "{bad json", b"\xff\xfe"])
def test_unreadable_config_json_is_a_config_error(raw):
    with pytest.raises(ConfigError) as error:
        load_config_json(raw)
    assert error.value.key == "config.json"


def test_bud_sim_reports_a_broken_config_json_instead_of_crashing(tmp_path: Path):
    from typer.testing import CliRunner

    from cli.sim import app

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**fixture("llama_3_1_8b"), "num_attention_heads": "many"}))
    result = CliRunner().invoke(app, ["recommend", "--model", str(path), "--gpu", "h200_sxm", "--gpus", "1"])
    assert result.exit_code == 2 and "num_attention_heads" in result.output


async def test_the_registered_facts_of_mla_and_sliding_window_models_are_what_bud_sim_reads(
        api, control_worker, settings, tmp_path: Path):
    """Through the real RegisterModel (S3, clamd, the scanning activities, PostgreSQL): the stored facts carry the
    attention variant, and size the KV cache as `bud sim` sizes the same config.json."""
    mla = {"model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"], "kv_lora_rank": 32,
           "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16}
    sliding = {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 512}
    for overrides, expected in ((mla, {"kv_lora_rank": 32, "qk_rope_head_dim": 8, "full_attention_layers": None}),
                                (sliding, {"kv_lora_rank": 0, "full_attention_layers": 0, "sliding_window": 512})):
        tiny = write_tiny_llama(tmp_path / overrides["model_type"], config_overrides=overrides)
        model = await register_and_wait(api, settings, await upload(settings, tiny.path),
                                        parameter_count=tiny.parameter_count, context_length=2048)
        assert model["status"] == "AVAILABLE", model["scan_report"]
        stored = available_facts(stored_row(model["facts"]))
        assert {key: getattr(stored, key) for key in expected} == expected
        simulated = bud_sim_model(str(tiny.path / "config.json"))
        # the registry counts the weights' parameters; bud sim, without weights, estimates them from the config
        assert stored.model_copy(update={"parameter_count": simulated.parameter_count}) == simulated
        config = ServingConfig(max_num_seqs=4, max_model_len=2048)
        assert memory_breakdown(stored, get_gpu(H200), config).kv_cache == memory_breakdown(
            simulated, get_gpu(H200), config).kv_cache
    # 2 layers x (K, V) x 2 KV heads x 16 dims in bf16, for at most the 512-token window of a 32768-token context
    assert kv_bytes_per_token(stored, "mistral_7b_v0_1") == 2 * 2 * 2 * 16 * 2.0 * 512 / 32768


def test_bud_models_upload_declares_the_parameter_count_the_registry_checks_for_packed_weights(tmp_path: Path):
    """4-bit weights pack several parameters per tensor element: upload declares the config's estimate, as the
    registry judges it, so a GPTQ model is not blocked by its own declaration."""
    from cli.models import declared_facts

    packed = {"quantization_config": {"quant_method": "gptq", "bits": 4}, "num_hidden_layers": 16}
    tiny = write_tiny_llama(tmp_path / "gptq", config_overrides=packed)  # 2 layers of elements, 16 described
    _, parameters, context = declared_facts(tiny.path)
    config = json.loads((tiny.path / "config.json").read_text())
    facts, findings = registration_facts(config, weights_parameter_count=tiny.parameter_count,
                                         declared_parameter_count=parameters, declared_context_length=context)
    assert parameters == facts.parameter_count != tiny.parameter_count
    assert findings == []
