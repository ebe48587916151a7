"""Search quality and speed of the budsim optimizer: `python bench/bench_budsim_search.py`.

For representative spaces, compares the Pareto front `optimize` returns (NSGA-II plus its local polish; among
target-meeting configs when targets are given) with the true front from exhaustive enumeration of the same space, by hypervolume in normalised objective space
(throughput up, latency down, $/hour down; reference point just past the true front's nadir), and times one
whole recommendation (`optimize`). Targets: hypervolume ratio >= 0.99 and < 2 s per recommendation.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from pymoo.indicators.hv import HV

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budsim.catalog import get_model  # noqa: E402
from budsim.schemas import OptimizationRequest, Targets, Workload  # noqa: E402
from budsim.search import ConfigEvaluator, build_space, optimize, result_front, validate_request  # noqa: E402

HV_TARGET, SECONDS_TARGET = 0.99, 2.0

SPACES = [
    (
        "Llama-3.1-8B, 8 x H100, chat",
        "meta-llama/Llama-3.1-8B-Instruct",
        "h100_sxm",
        8,
        Workload(input_tokens=1024, output_tokens=256, concurrency=64),
        Targets(),
    ),
    (
        "Llama-3.1-70B, 8 x H100, long prompts",
        "meta-llama/Llama-3.1-70B-Instruct",
        "h100_sxm",
        8,
        Workload(input_tokens=4096, output_tokens=512, concurrency=32),
        Targets(),
    ),
    (
        "Llama-3.1-70B, 8 x H100, TTFT <= 1 s",
        "meta-llama/Llama-3.1-70B-Instruct",
        "h100_sxm",
        8,
        Workload(input_tokens=2048, output_tokens=256, concurrency=48),
        Targets(max_ttft_ms=1000),
    ),
    (
        "Qwen3-32B, 4 x L40S",
        "Qwen/Qwen3-32B",
        "nvidia-l40s",
        4,
        Workload(input_tokens=1024, output_tokens=512, concurrency=16),
        Targets(),
    ),
    (
        "Llama-3.1-8B, 32 x A100-80GB, fleet",
        "meta-llama/Llama-3.1-8B-Instruct",
        "nvidia-a100-80gb",
        32,
        Workload(input_tokens=512, output_tokens=512, concurrency=256),
        Targets(max_latency_ms=30000),
    ),
    (
        "DeepSeek-R1, 16 x H200",
        "deepseek-ai/DeepSeek-R1",
        "h200_sxm",
        16,
        Workload(input_tokens=4096, output_tokens=1024, concurrency=64),
        Targets(),
    ),
    (
        "Mixtral-8x7B, 8 x H200",
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        "h200_sxm",
        8,
        Workload(input_tokens=2048, output_tokens=256, concurrency=128),
        Targets(),
    ),
]


def run_space(label, model_id, gpu, gpus, workload, targets) -> dict:
    request = OptimizationRequest(
        model=get_model(model_id), gpu_type=gpu, available_gpus=gpus, workload=workload, targets=targets
    )
    spec = validate_request(request)
    space = build_space(request, spec)

    started = time.perf_counter()
    evaluator = ConfigEvaluator(request, spec)
    unique = {}
    for genes in space.all_genes():
        config = space.decode(genes)
        unique[
            (
                config.tensor_parallel_size,
                config.pipeline_parallel_size,
                config.max_num_seqs,
                config.max_num_batched_tokens,
                config.replicas,
            )
        ] = config
    exhaustive = evaluator.evaluate(list(unique.values()))
    exhaustive_s = time.perf_counter() - started

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        optimize(request)
        timings.append(time.perf_counter() - started)

    result = optimize(request)
    found_front = np.array(
        [
            [-c.prediction.max_throughput_tps, c.prediction.e2e_latency_ms, c.prediction.cost_per_hour]
            for c in result.pareto
        ]
    )
    true_front = np.array([e.objectives() for e in result_front(exhaustive)])
    ideal, nadir = true_front.min(axis=0), true_front.max(axis=0)
    scale = np.where(nadir > ideal, nadir - ideal, 1.0)
    indicator = HV(ref_point=np.full(3, 1.1))
    true_hv = indicator(((true_front - ideal) / scale))
    found_hv = indicator(((found_front - ideal) / scale)) if len(found_front) else 0.0
    return {
        "label": label,
        "space": len(unique),
        "evaluated": result.evaluated,
        "true_front": len(true_front),
        "found_front": len(found_front),
        "hv_ratio": found_hv / true_hv if true_hv > 0 else 1.0,
        "median_s": statistics.median(timings),
        "exhaustive_s": exhaustive_s,
    }


def main() -> None:
    results = [run_space(*space) for space in SPACES]
    print(
        f"{'space':40} {'configs':>8} {'NSGA evals':>10} {'front':>11} {'HV ratio':>9} {'recommend s':>12} {'exhaustive s':>13}"
    )
    for r in results:
        print(
            f"{r['label']:40} {r['space']:8d} {r['evaluated']:10d} {r['found_front']:5d}/{r['true_front']:<5d} "
            f"{r['hv_ratio']:9.4f} {r['median_s']:12.2f} {r['exhaustive_s']:13.2f}"
        )
    worst_hv = min(r["hv_ratio"] for r in results)
    slowest = max(r["median_s"] for r in results)
    print(
        f"worst hypervolume ratio {worst_hv:.4f} (target >= {HV_TARGET}); slowest recommendation {slowest:.2f} s "
        f"(target < {SECONDS_TARGET} s)"
    )
    if worst_hv < HV_TARGET or slowest >= SECONDS_TARGET:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
