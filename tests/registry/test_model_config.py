"""config.json -> architecture facts, parameter estimates against published counts, and declared-fact checks."""

from __future__ import annotations

import json

import pytest

from core.model_facts import ConfigError, architecture_from_config, estimate_parameter_count, supported_context_length
from registry.model_config import check_declared_facts, registration_facts
from registry.safetensors_check import check_safetensors_file
from tests.model_files import TinyLlamaSpec, write_tiny_llama

# Language-model fields of the families' published config.json files, with the parameter count of their
# published safetensors weights (DeepSeek-V3: 671 B without its multi-token-prediction layer).
PUBLISHED: dict[str, tuple[dict, int]] = {
    "Meta-Llama-3-8B": ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                         "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                         "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
                         "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 8_030_261_248),
    "Mistral-7B-v0.1": ({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                         "vocab_size": 32000, "max_position_embeddings": 32768, "sliding_window": 4096,
                         "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 7_241_732_096),
    "Qwen2-7B": ({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                  "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                  "max_position_embeddings": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
                 7_615_616_512),
    "Qwen3-8B": ({"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                  "max_position_embeddings": 40960, "tie_word_embeddings": False, "attention_bias": False,
                  "torch_dtype": "bfloat16"}, 8_190_735_360),
    "Mixtral-8x7B": ({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                      "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                      "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
                      "num_experts_per_tok": 2, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
                     46_702_792_704),
    "gemma-7b": ({"model_type": "gemma", "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
                  "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "vocab_size": 256000,
                  "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}, 8_537_680_896),
    "Phi-3-mini-4k": ({"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                       "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                       "max_position_embeddings": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
                      3_821_079_552),
    "Qwen3-30B-A3B": ({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                       "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
                       "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                       "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
                       "max_position_embeddings": 40960, "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
                      30_532_122_624),
    "Qwen1.5-MoE-A2.7B": ({"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
                           "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
                           "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
                           "num_experts": 60, "num_experts_per_tok": 4, "decoder_sparse_step": 1,
                           "vocab_size": 151936, "max_position_embeddings": 8192, "tie_word_embeddings": False,
                           "torch_dtype": "bfloat16"}, 14_315_784_192),
    "DeepSeek-V3": ({"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
                     "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
                     "num_key_value_heads": 128, "n_routed_experts": 256, "n_shared_experts": 1,
                     "num_experts_per_tok": 8, "first_k_dense_replace": 3, "moe_layer_freq": 1, "q_lora_rank": 1536,
                     "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
                     "vocab_size": 129280, "max_position_embeddings": 163840,
                     "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096},
                     "tie_word_embeddings": False, "torch_dtype": "bfloat16"}, 671_000_000_000),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_estimates_match_published_parameter_counts(name: str):
    config, published = PUBLISHED[name]
    assert abs(estimate_parameter_count(config) - published) / published < 0.005


def test_architecture_facts_of_known_families():
    mixtral = architecture_from_config(PUBLISHED["Mixtral-8x7B"][0])
    assert (mixtral.num_experts, mixtral.experts_per_token, mixtral.intermediate_size) == (8, 2, 14336)
    assert mixtral.is_moe and mixtral.head_dim == 128 and mixtral.num_kv_heads == 8
    qwen_moe = architecture_from_config(PUBLISHED["Qwen3-30B-A3B"][0])
    assert (qwen_moe.num_experts, qwen_moe.experts_per_token, qwen_moe.intermediate_size) == (128, 8, 768)
    gemma = architecture_from_config(PUBLISHED["gemma-7b"][0])
    assert gemma.head_dim == 256  # explicit, not hidden / heads (192)
    deepseek = architecture_from_config(PUBLISHED["DeepSeek-V3"][0])
    assert (deepseek.num_experts, deepseek.intermediate_size, deepseek.head_dim) == (256, 2048, 192)
    llama = architecture_from_config(PUBLISHED["Meta-Llama-3-8B"][0])
    assert llama.architectures == ["LlamaForCausalLM"] and not llama.is_moe and llama.dtype == "bfloat16"
    assert llama.parameter_count == PUBLISHED["Meta-Llama-3-8B"][1]


def test_registration_stores_the_attention_facts_the_optimizer_sizes_from():
    """MLA and sliding-window facts reach the stored facts (they once stopped at `bud sim`)."""
    deepseek, findings = registration_facts(PUBLISHED["DeepSeek-V3"][0], weights_parameter_count=671_026_404_352,
                                            declared_parameter_count=671_000_000_000, declared_context_length=163840)
    assert findings == []
    assert (deepseek.kv_lora_rank, deepseek.qk_rope_head_dim, deepseek.parameter_count) == (512, 64, 671_026_404_352)
    mistral, _ = registration_facts(PUBLISHED["Mistral-7B-v0.1"][0], weights_parameter_count=None)
    assert (mistral.full_attention_layers, mistral.sliding_window) == (0, 4096)
    llama, _ = registration_facts(PUBLISHED["Meta-Llama-3-8B"][0], weights_parameter_count=None)
    assert (llama.kv_lora_rank, llama.full_attention_layers, llama.sliding_window) == (0, None, None)


def test_a_config_that_cannot_describe_the_model_stores_no_facts_but_still_checks_the_declaration():
    broken = {**PUBLISHED["Meta-Llama-3-8B"][0], "num_attention_heads": 0}
    facts, findings = registration_facts(broken, weights_parameter_count=8_030_261_248,
                                         declared_parameter_count=70_000_000_000)
    assert facts is None
    assert codes(findings) == [("config_incomplete", True), ("parameter_count_mismatch", True)]
    assert findings[0].subject == "num_attention_heads"


def test_defaults_for_kv_heads_head_dim_and_dtype_spellings():
    config = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
              "num_attention_heads": 8, "vocab_size": 1000, "max_position_embeddings": 4096, "dtype": "float16"}
    arch = architecture_from_config(config)
    assert (arch.num_kv_heads, arch.head_dim, arch.dtype) == (8, 64, "float16")
    arch = architecture_from_config({**config, "num_key_value_heads": None, "head_dim": None})
    assert (arch.num_kv_heads, arch.head_dim) == (8, 64)
    fp8 = architecture_from_config({**config, "quantization_config": {"quant_method": "fp8"}})
    assert (fp8.dtype, fp8.quantization) == ("fp8", "fp8")
    assert architecture_from_config({**config, "dtype": "torch.bfloat16"}).dtype == "bfloat16"
    assert architecture_from_config({**config, "dtype": "half"}).dtype == "float16"


def test_generated_model_config_agrees_with_its_weights(tiny_model):
    config = json.loads((tiny_model.path / "config.json").read_text())
    weights = check_safetensors_file(tiny_model.path / "model.safetensors").parameter_count
    arch = architecture_from_config(config, parameter_count=weights)
    assert estimate_parameter_count(config) == weights == tiny_model.parameter_count
    assert (arch.num_layers, arch.hidden_size, arch.num_kv_heads, arch.vocab_size) == (2, 64, 2, 512)


def test_nested_text_config_of_multimodal_models():
    config = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                              "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                              "head_dim": 256, "vocab_size": 262208, "max_position_embeddings": 131072},
              "vision_config": {"hidden_size": 1152}}
    arch = architecture_from_config(config)
    assert (arch.model_type, arch.num_layers, arch.head_dim, arch.max_position_embeddings) == ("gemma3", 34, 256,
                                                                                               131072)


@pytest.mark.parametrize("missing", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                                     "max_position_embeddings", "intermediate_size", "model_type"])
def test_missing_required_key_is_named(missing: str):
    config = dict(PUBLISHED["Meta-Llama-3-8B"][0])
    del config[missing]
    with pytest.raises(ConfigError) as error:
        architecture_from_config(config)
    assert error.value.key == missing and f"'{missing}'" in str(error.value)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        architecture_from_config({**PUBLISHED["Meta-Llama-3-8B"][0], "num_hidden_layers": "32"})


def test_rope_scaling_extends_the_supported_context():
    qwen = {**PUBLISHED["Qwen2-7B"][0],
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert supported_context_length(qwen) == 131072
    assert supported_context_length(PUBLISHED["DeepSeek-V3"][0]) == 163840
    assert supported_context_length(PUBLISHED["Meta-Llama-3-8B"][0]) == 8192


def codes(findings) -> list[tuple[str, bool]]:
    return [(finding.code, finding.blocking) for finding in findings]


def test_declared_facts_that_match_pass(tiny_model):
    config = json.loads((tiny_model.path / "config.json").read_text())
    findings = check_declared_facts(declared_parameter_count=int(tiny_model.parameter_count * 1.05),
                                    declared_context_length=2048, config=config,
                                    weights_parameter_count=tiny_model.parameter_count)
    assert findings == []


def test_declared_parameter_count_far_from_the_weights_blocks(tiny_model):
    config = json.loads((tiny_model.path / "config.json").read_text())
    findings = check_declared_facts(declared_parameter_count=7_000_000_000, declared_context_length=None,
                                    config=config, weights_parameter_count=tiny_model.parameter_count)
    assert codes(findings) == [("parameter_count_mismatch", True)]
    assert f"{tiny_model.parameter_count:,}" in findings[0].message


def test_declared_context_beyond_the_model_blocks_and_shorter_is_a_note(tiny_model):
    config = json.loads((tiny_model.path / "config.json").read_text())
    kwargs = {"declared_parameter_count": None, "config": config, "weights_parameter_count": None}
    assert codes(check_declared_facts(declared_context_length=8192, **kwargs)) == [("context_length_exceeds_model",
                                                                                     True)]
    assert codes(check_declared_facts(declared_context_length=1024, **kwargs)) == [("context_length_below_model",
                                                                                     False)]


def test_config_that_lies_about_its_weights_is_noted(tmp_path):
    spec = TinyLlamaSpec()
    model = write_tiny_llama(tmp_path / "liar", spec, config_overrides={"num_hidden_layers": 32})
    config = json.loads((model.path / "config.json").read_text())
    weights = check_safetensors_file(model.path / "model.safetensors").parameter_count
    findings = check_declared_facts(declared_parameter_count=estimate_parameter_count(config),
                                    declared_context_length=None, config=config, weights_parameter_count=weights)
    # the registrant copied the config's size: it disagrees with the real weights, which win
    assert codes(findings) == [("parameter_count_mismatch", True), ("config_disagrees_with_weights", False)]


def test_pickle_only_or_packed_weights_are_judged_by_the_config_estimate():
    config = PUBLISHED["Meta-Llama-3-8B"][0]
    assert check_declared_facts(declared_parameter_count=8_000_000_000, declared_context_length=None,
                                config=config, weights_parameter_count=None) == []
    gptq = {**config, "quantization_config": {"quant_method": "gptq", "bits": 4}}
    # packed int32 tensors hold ~1/8 of the elements; the 8 B declaration is still right
    assert check_declared_facts(declared_parameter_count=8_000_000_000, declared_context_length=None,
                                config=gptq, weights_parameter_count=1_300_000_000) == []
    assert architecture_from_config(gptq, 1_300_000_000).parameter_count == estimate_parameter_count(config)
    assert architecture_from_config(gptq).dtype == "int4"


def test_impossible_values_are_config_errors_naming_the_key():
    config = PUBLISHED["Meta-Llama-3-8B"][0]
    with pytest.raises(ConfigError) as error:
        architecture_from_config({**config, "num_key_value_heads": -1})
    assert error.value.key == "num_key_value_heads"
    with pytest.raises(ConfigError):
        architecture_from_config({**config, "head_dim": "wide"})


def test_declared_facts_are_still_checked_against_the_weights_when_the_config_is_incomplete():
    incomplete = {"model_type": "llama", "hidden_size": 64}
    findings = check_declared_facts(declared_parameter_count=10_000_000, declared_context_length=4096,
                                    config=incomplete, weights_parameter_count=150_000)
    assert codes(findings) == [("parameter_count_mismatch", True)]
    assert check_declared_facts(declared_parameter_count=None, declared_context_length=4096, config=incomplete,
                                weights_parameter_count=None) == []


def test_layers_present_far_from_the_declared_count_block_naming_both():
    config = {**PUBLISHED["Meta-Llama-3-8B"][0], "num_hidden_layers": 40}
    _, findings = registration_facts(config, weights_parameter_count=None,
                                     weights_layers={"model.layers": [0, 1], "model.mtp.layers": [0]})
    [finding] = [f for f in findings if f.code == "layer_count_mismatch"]
    assert finding.blocking and finding.subject == "num_hidden_layers"
    assert finding.message == ("config.json declares 40 layers but the safetensors weights hold 2 "
                               "(model.layers.0 to model.layers.1)")


@pytest.mark.parametrize("declared, weights_layers", [
    (61, {"model.layers": list(range(62))}),  # DeepSeek-V3: one multi-token-prediction layer beyond the config
    (32, {"language_model.model.layers": list(range(32)), "vision_tower.encoder.layers": list(range(24))}),
    (24, {"vision_tower.encoder.layers": list(range(24)), "language_model.model.layers": list(range(26))}),
    (40, {}),  # no numbered layer names: nothing to compare
])
def test_layer_counts_that_match_some_stem_or_follow_no_pattern_pass(declared: int, weights_layers: dict):
    config = {**PUBLISHED["Meta-Llama-3-8B"][0], "num_hidden_layers": declared}
    _, findings = registration_facts(config, weights_parameter_count=None, weights_layers=weights_layers)
    assert "layer_count_mismatch" not in [f.code for f in findings]


def test_declared_layers_of_a_multimodal_config_come_from_text_config():
    config = {"model_type": "llava", "vision_config": {"num_hidden_layers": 24},
              "text_config": {**PUBLISHED["Meta-Llama-3-8B"][0], "num_hidden_layers": 32}}
    _, findings = registration_facts(config, weights_parameter_count=None,
                                     weights_layers={"language_model.model.layers": list(range(8))})
    [finding] = [f for f in findings if f.code == "layer_count_mismatch"]
    assert "declares 32 layers" in finding.message and "hold 8" in finding.message
