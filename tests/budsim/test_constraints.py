from budsim.catalog import get_gpu, get_model
from budsim.constraints import check_config, max_seqs_that_fit, memory_breakdown
from budsim.schemas import ServingConfig


def test_a_sensible_config_passes(llama70b):
    config = ServingConfig(tensor_parallel_size=4, max_num_seqs=64, max_model_len=4096)
    assert check_config(llama70b, "h100_sxm", config, free_gpus=8) == []


def test_70b_in_bf16_does_not_fit_one_h100_and_says_why(llama70b):
    reasons = check_config(llama70b, "h100_sxm", ServingConfig(tensor_parallel_size=1), free_gpus=8)
    assert len(reasons) == 1
    assert "does not fit in GPU memory" in reasons[0] and "weights 131.4" in reasons[0]


def test_kv_cache_for_max_num_seqs_times_max_model_len_counts(llama8b):
    h100 = get_gpu("h100_sxm")
    small = ServingConfig(max_num_seqs=16, max_model_len=8192)
    assert check_config(llama8b, h100, small, free_gpus=1) == []
    huge = small.model_copy(update={"max_num_seqs": 1024, "max_num_batched_tokens": 16384})
    reasons = check_config(llama8b, h100, huge, free_gpus=1)
    assert any("KV cache" in r and "1024 x 8192" in r for r in reasons)
    # the boundary the optimizer uses agrees with the check on both sides
    limit = max_seqs_that_fit(llama8b, h100, small)
    assert 16 < limit < 1024
    assert memory_breakdown(llama8b, h100, small.model_copy(update={"max_num_seqs": limit})).fits
    assert not memory_breakdown(llama8b, h100, small.model_copy(update={"max_num_seqs": limit + 1})).fits


def test_tp_must_divide_attention_heads(llama8b):
    reasons = check_config(llama8b, "h100_sxm", ServingConfig(tensor_parallel_size=3), free_gpus=8)
    assert any("does not divide the 32 attention heads" in r for r in reasons)


def test_tp_beyond_kv_heads_replicates_them_like_vllm():
    qwen = get_model("Qwen/Qwen2.5-1.5B-Instruct")  # 12 attention heads, 2 KV heads
    assert check_config(qwen, "h100_sxm", ServingConfig(tensor_parallel_size=4), free_gpus=8) == []  # KV heads x2
    qwen7b = get_model("Qwen/Qwen2.5-7B-Instruct")  # 28 heads, 4 KV heads: 7 divides 28 but not 4, nor 4 divides 7
    reasons = check_config(qwen7b, "h100_sxm", ServingConfig(tensor_parallel_size=7), free_gpus=8)
    assert any("KV heads" in r for r in reasons)


def test_pp_must_divide_layers_and_tp_fit_a_node(llama70b):
    reasons = check_config(
        llama70b, "h100_sxm", ServingConfig(tensor_parallel_size=16, pipeline_parallel_size=3), free_gpus=64
    )
    assert any("does not divide the 80 layers" in r for r in reasons)
    assert any("exceeds the 8 GPUs of one nvidia-h100-80gb node" in r for r in reasons)


def test_not_enough_free_gpus(llama70b):
    reasons = check_config(llama70b, "h100_sxm", ServingConfig(tensor_parallel_size=4, replicas=3), free_gpus=8)
    assert any("needs 12 GPUs" in r and "only 8" in r for r in reasons)


def test_runtime_must_implement_the_architecture():
    minimax = get_model("MiniMaxAI/MiniMax-M2.5")
    config = ServingConfig(tensor_parallel_size=4, runtime="tensorrt-llm", max_num_seqs=8)
    assert any("does not implement model_type 'minimax_m2'" in r for r in check_config(minimax, "h200_sxm", config, 8))
    assert check_config(minimax, "h200_sxm", config.model_copy(update={"runtime": "vllm"}), 8) == []


def test_mla_kv_cache_is_not_multiplied_by_heads():
    deepseek = get_model("deepseek-ai/DeepSeek-R1")
    config = ServingConfig(tensor_parallel_size=8, max_num_seqs=64, max_model_len=8192)
    memory = memory_breakdown(deepseek, get_gpu("h200_sxm"), config)
    # 61 layers x 576 values x 1 byte (fp8 KV) per token = 35 KB; 64 x 8192 tokens = 18.4 GB per GPU
    assert 15e9 < memory.kv_cache < 20e9
    assert check_config(deepseek, "h200_sxm", config, free_gpus=8) == []
