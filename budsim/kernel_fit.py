"""Fitting the per-GPU kernel profiles on measured kernel tables, offline: `python -m budsim.kernel_fit`.

The roofline needs to know how close real kernels get to a GPU's data-sheet peaks. Instead of one guessed pair of
constants for every GPU, this module fits them per GPU on aiconfigurator's kernel tables measured inside vLLM, as
the `aiconfigurator-core` package ships them (systems/data/<gpu>/: GEMM, context/generation attention, custom and
NCCL all-reduce; `kernel_tables` says which version of each table):

* GEMM:        t = max(2mnk / (peak(dtype) x gemm_efficiency), bytes / (bandwidth x memory_efficiency)) + gemm_floor
* decode attn: t = KV bytes read / (bandwidth x decode_attention_efficiency) + attention_floor
* prefill attn: t = causal attention FLOPs / (bf16 peak x prefill_attention_efficiency) + attention_floor
* all-reduce:  the measured time per message size for n = 2, 4, 8 GPUs (the faster of vLLM's custom all-reduce
                and NCCL), interpolated log-log

GPUs without tables (Blackwell, L4, A10G, ...) get the median efficiencies of the measured ones and an all-reduce
scaled from their interconnect. The fits are then checked against data they never saw: Vidur's per-operator
times (A100/H100 model layers) and all-reduce latencies, and Splitwise's decode iteration times (Llama-2-70B,
A100/H100, TP 2/4/8), read from `budsim.dataset.perf_data_dir()` when it holds them. The output is
budsim/artifacts/kernels.json (the profiles, read by the roofline) and kernels.md (fit quality and the independent
checks).

The package also carries a silicon_sample.csv with rows kept out of the project's measured data for an
independent check of the predictor: nothing here, nor in training or evaluation, reads it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import pyarrow.parquet as pq
import yaml
from packaging.version import Version
from scipy.optimize import least_squares

from budsim.catalog import get_gpu, get_model
from budsim.dataset import PERF_DATA_ENV, perf_data_dir
from budsim.kernels import ARTIFACT, AllReduceCurve, KernelProfile, load_profiles
from budsim.roofline import ServingPoint, physics

REPORT = ARTIFACT.parent / "kernels.md"
# aiconfigurator folder name -> the catalog's GPU name
MEASURED_GPUS = {
    "a100_sxm": "nvidia-a100-80gb",
    "h100_sxm": "nvidia-h100-80gb",
    "h200_sxm": "nvidia-h200",
    "l40s": "nvidia-l40s",
}
ALLREDUCE_SIZES = (2, 4, 8)


KERNEL_TABLES_PACKAGE = "aiconfigurator-core==0.12.0"


class KernelTablesMissing(FileNotFoundError):
    """The kernel tables are not installed or lack a table; the message says which and how to get it."""


def systems_dir() -> Path:
    """The installed aiconfigurator-core's systems/ folder: system specs, query_versions.yaml and data/<gpu>/."""
    spec = importlib.util.find_spec("aiconfigurator_core")  # locates the package without loading its extension
    if spec is None or not spec.submodule_search_locations:
        raise KernelTablesMissing(
            f"aiconfigurator's kernel tables not found: the fit reads them from the {KERNEL_TABLES_PACKAGE} "
            f"package; install it with `pip install {KERNEL_TABLES_PACKAGE}`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "systems"


@dataclass(frozen=True)
class KernelTables:
    """The measured tables one GPU's fit reads, and the versions they were measured with."""

    gemm: Path
    context_attention: Path
    generation_attention: Path
    custom_allreduce: Path | None
    nccl: Path | None
    vllm_version: str
    allreduce_version: str | None
    nccl_version: str


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise KernelTablesMissing(f"kernel table {path} not found (expected in {KERNEL_TABLES_PACKAGE})")
    return path


def kernel_tables(systems: Path, system: str) -> KernelTables:
    """GEMM and attention at the vLLM version aiconfigurator queries for the system (query_versions.yaml), vLLM's
    custom all-reduce at the newest version not newer than that (aiconfigurator's backward fill), NCCL at the
    version the system's spec names."""
    versions = yaml.safe_load((systems / "query_versions.yaml").read_text())
    vllm = versions.get("overrides", {}).get(system, {}).get("vllm", versions["defaults"]["vllm"])["current"]
    spec = yaml.safe_load((systems / f"{system}.yaml").read_text())
    data = systems / spec["data_dir"]
    nccl_version = str(spec["misc"]["nccl_version"])
    allreduce_versions = sorted(
        (Version(path.parent.name), path.parent.name)
        for path in (data / "comm" / "vllm").glob("*/custom_allreduce_perf.parquet")
        if Version(path.parent.name) <= Version(vllm)
    )
    allreduce_version = allreduce_versions[-1][1] if allreduce_versions else None
    nccl = data / "comm" / "nccl" / nccl_version / "nccl_perf.parquet"
    return KernelTables(
        gemm=_existing(data / "gemm" / "vllm" / vllm / "gemm_perf.parquet"),
        context_attention=_existing(data / "attention" / "vllm" / vllm / "context_attention_perf.parquet"),
        generation_attention=_existing(data / "attention" / "vllm" / vllm / "generation_attention_perf.parquet"),
        custom_allreduce=(
            data / "comm" / "vllm" / allreduce_version / "custom_allreduce_perf.parquet" if allreduce_version else None
        ),
        nccl=nccl if nccl.is_file() else None,
        vllm_version=vllm,
        allreduce_version=allreduce_version,
        nccl_version=nccl_version,
    )


def _read_parquet(path: Path) -> list[dict]:

    return pq.read_table(path).to_pylist()


def _fit_log(residual, start: list[float]) -> np.ndarray:

    return least_squares(residual, np.log(start), loss="soft_l1", f_scale=0.2).x


def _mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def fit_gemm(rows: list[dict], peak_flops: float, bandwidth: float, dtype: str) -> tuple[float, float, float, float]:
    """(gemm_efficiency, memory_efficiency, floor_s, fit MAPE %) over the fastest kernel per shape."""
    best: dict[tuple, float] = {}
    for r in rows:
        if r["gemm_dtype"] != dtype:
            continue
        key = (r["m"], r["n"], r["k"])
        best[key] = min(best.get(key, math.inf), r["latency"] / 1000.0)
    shapes = np.array(list(best), dtype=float)
    measured = np.array(list(best.values()))
    m, n, k = shapes.T
    width = 1.0 if dtype.startswith("fp8") else 2.0
    flops = 2.0 * m * n * k
    moved = (m * k + k * n) * width + m * n * 2.0

    def model(params: np.ndarray) -> np.ndarray:
        ec, em, floor = np.exp(params)
        return np.maximum(flops / (peak_flops * ec), moved / (bandwidth * em)) + floor

    params = _fit_log(lambda p: np.log(model(p) / measured), [0.6, 0.7, 8e-6])
    ec, em, floor = np.exp(params)
    return float(ec), float(em), float(floor), _mape(model(params), measured)


def _full_attention(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("window_size") and r.get("beam_width", 1) == 1]


def _fit_rate_and_floor(work: np.ndarray, peak: float, measured: np.ndarray,
                        start_efficiency: float) -> tuple[float, float, float]:
    """(efficiency, floor_s, fit MAPE %) of t = work / (peak x efficiency) + floor (bytes at a bandwidth, or FLOPs
    at a compute peak)."""

    def model(params: np.ndarray) -> np.ndarray:
        efficiency, floor = np.exp(params)
        return work / (peak * efficiency) + floor

    params = _fit_log(lambda p: np.log(model(p) / measured), [start_efficiency, 8e-6])
    efficiency, floor = np.exp(params)
    return float(efficiency), float(floor), _mape(model(params), measured)


def fit_decode_attention(rows: list[dict], bandwidth: float) -> tuple[float, float, float]:
    """(bandwidth efficiency, floor_s, fit MAPE %): generation attention reads every cached K and V once."""
    rows = _full_attention(rows)
    batch = np.array([r["batch_size"] for r in rows], dtype=float)
    context = np.array([r["isl"] + r["step"] for r in rows], dtype=float)
    kv_heads = np.array([r["num_key_value_heads"] for r in rows], dtype=float)
    head_dim = np.array([r["head_dim"] for r in rows], dtype=float)
    width = np.array([1.0 if str(r["kv_cache_dtype"]).startswith("fp8") else 2.0 for r in rows])
    measured = np.array([r["latency"] / 1000.0 for r in rows])
    moved = batch * context * kv_heads * head_dim * 2.0 * width
    return _fit_rate_and_floor(moved, bandwidth, measured, start_efficiency=0.6)


def fit_prefill_attention(rows: list[dict], peak_flops: float) -> tuple[float, float, float]:
    """(compute efficiency, floor_s, fit MAPE %) for causal prefill attention (QK^T and PV, half the square)."""
    rows = [r for r in _full_attention(rows) if str(r["kv_cache_dtype"]) in ("bfloat16", "float16")]
    batch = np.array([r["batch_size"] for r in rows], dtype=float)
    isl = np.array([r["isl"] for r in rows], dtype=float)
    heads = np.array([r["num_heads"] for r in rows], dtype=float)
    head_dim = np.array([r["head_dim"] for r in rows], dtype=float)
    measured = np.array([r["latency"] / 1000.0 for r in rows])
    flops = 4.0 * batch * heads * head_dim * isl * (isl + 1) / 2.0
    return _fit_rate_and_floor(flops, peak_flops, measured, start_efficiency=0.4)


HALF_BYTES = 2  # the tables' message_size counts bf16/half elements (aiconfigurator's speed-of-light: 2 x size x 2)


def allreduce_curves(custom: list[dict], nccl: list[dict]) -> dict[int, AllReduceCurve]:
    """Per GPU count, the faster of vLLM's custom all-reduce (CUDA graph) and NCCL at each message size (converted
    to bytes), made monotone (a larger message never finishes sooner)."""
    best: dict[tuple[int, int], float] = {}
    for r in custom:
        if r.get("backend", "vllm_graph") != "vllm_graph" or r.get("allreduce_dtype") not in ("bfloat16", None):
            continue
        key = (int(r["num_gpus"]), int(r["message_size"]) * HALF_BYTES)
        best[key] = min(best.get(key, math.inf), r["latency"] / 1000.0)
    for r in nccl:
        if r["op_name"] != "all_reduce" or r.get("nccl_dtype") != "half":
            continue
        key = (int(r["num_gpus"]), int(r["message_size"]) * HALF_BYTES)
        best[key] = min(best.get(key, math.inf), r["latency"] / 1000.0)
    curves = {}
    for gpus in sorted({n for n, _ in best}):
        sizes = sorted(size for n, size in best if n == gpus)
        seconds = np.maximum.accumulate([best[(gpus, size)] for size in sizes])
        curves[gpus] = AllReduceCurve([float(x) for x in sizes], [float(x) for x in seconds])
    return curves


def fit_gpu(tables: KernelTables, spec) -> tuple[KernelProfile, dict]:
    quality: dict[str, float] = {}
    gemm_rows = _read_parquet(tables.gemm)
    efficiencies, memory, floors = {}, [], []
    for precision, dtype, peak in (("bf16", "bfloat16", spec.bf16_tflops), ("fp8", "fp8", spec.fp8_tflops)):
        if peak is None or not any(r["gemm_dtype"] == dtype for r in gemm_rows):
            continue
        ec, em, floor, error = fit_gemm(gemm_rows, peak * 1e12, spec.hbm_bandwidth, dtype)
        efficiencies[precision], quality[f"gemm_{precision}_mape"] = ec, error
        memory.append(em)
        floors.append(floor)
    decode_eff, decode_floor, quality["decode_attention_mape"] = fit_decode_attention(
        _read_parquet(tables.generation_attention), spec.hbm_bandwidth
    )
    prefill_eff, prefill_floor, quality["prefill_attention_mape"] = fit_prefill_attention(
        _read_parquet(tables.context_attention), spec.bf16_tflops * 1e12
    )
    allreduce = allreduce_curves(
        _read_parquet(tables.custom_allreduce) if tables.custom_allreduce else [],
        _read_parquet(tables.nccl) if tables.nccl else [],
    )
    profile = KernelProfile(
        memory_efficiency=float(np.median(memory)),
        gemm_efficiency=efficiencies,
        gemm_floor_s=float(np.median(floors)),
        decode_attention_efficiency=decode_eff,
        prefill_attention_efficiency=prefill_eff,
        attention_floor_s=float((decode_floor + prefill_floor) / 2),
        allreduce=allreduce,
        measured=True,
    )
    return profile, quality


def default_profile(measured: dict[str, KernelProfile], specs: dict) -> KernelProfile:
    """For GPUs without kernel tables: the median of the measured GPUs; all-reduce from the spec's interconnect
    at the median share of it that the measured NVLink GPUs reach."""
    values = list(measured.values())
    nvlink = {name: p for name, p in measured.items() if specs[name].nvlink}
    share, latency = allreduce_bus_share(nvlink, specs)
    median = lambda get: float(np.median([get(p) for p in values]))  # noqa: E731
    return KernelProfile(
        memory_efficiency=median(lambda p: p.memory_efficiency),
        gemm_efficiency={
            "bf16": median(lambda p: p.gemm("bf16")),
            "fp8": float(np.median([p.gemm_efficiency["fp8"] for p in values if "fp8" in p.gemm_efficiency])),
        },
        gemm_floor_s=median(lambda p: p.gemm_floor_s),
        decode_attention_efficiency=median(lambda p: p.decode_attention_efficiency),
        prefill_attention_efficiency=median(lambda p: p.prefill_attention_efficiency),
        attention_floor_s=median(lambda p: p.attention_floor_s),
        allreduce={},
        allreduce_latency_s=latency,
        allreduce_bus_share=share,
        measured=False,
    )


def allreduce_bus_share(measured: dict[str, KernelProfile], specs: dict) -> tuple[float, float]:
    """(median share of the spec interconnect bandwidth that all-reduce reaches at 8 GPUs, median latency)."""
    shares, latencies = [], []
    for name, profile in measured.items():
        curve = profile.allreduce.get(8)
        if curve:
            shares.append(curve.bus_bandwidth(8) / specs[name].interconnect_bandwidth)
            latencies.append(curve.latency_s)
    return (float(np.median(shares)), float(np.median(latencies))) if shares else (0.7, 8e-6)


def _profile_to_json(profile: KernelProfile) -> dict:
    document = asdict(profile)
    document["allreduce"] = {str(n): asdict(curve) for n, curve in profile.allreduce.items()}
    return document



# ---- independent checks: Vidur and Splitwise ----------------------------------------------------------------


def check_vidur_gemms(perf_dir: Path, profiles: dict[str, KernelProfile], specs: dict) -> dict[str, float]:
    """Predict Vidur's measured projection GEMMs (fp16 model layers, A100/H100, TP 1-8) with the fitted profiles."""
    results = {}
    for vidur_gpu, catalog_name in (("a100", "nvidia-a100-80gb"), ("h100", "nvidia-h100-80gb")):
        profile, spec = profiles[catalog_name], specs[catalog_name]
        predicted, measured = [], []
        for path in sorted((perf_dir / "vidur" / "data" / "profiling" / "compute" / vidur_gpu).glob("*/*/mlp.csv")):
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    tokens, tp = float(row["num_tokens"]), float(row["num_tensor_parallel_workers"])
                    hidden, inner = float(row["n_embd"]), float(row["n_expanded_embd"])
                    heads, kv_heads = float(row["n_head"]), float(row["n_kv_head"])
                    head_dim = hidden / heads
                    up = inner * (2 if row["use_gated_mlp"] == "True" else 1)
                    shapes = {
                        "attn_pre_proj": (hidden, (heads + 2 * kv_heads) * head_dim / tp),
                        "attn_post_proj": (hidden / tp, hidden),
                        "mlp_up_proj": (hidden, up / tp),
                        "mlp_down_proj": (inner / tp, hidden),
                    }
                    for op, (k, n) in shapes.items():
                        value = row.get(f"time_stats.{op}.median")
                        if not value:
                            continue
                        flops = 2.0 * tokens * n * k
                        moved = (tokens * k + k * n + tokens * n) * 2.0
                        predicted.append(
                            max(
                                flops / (spec.bf16_tflops * 1e12 * profile.gemm("bf16")),
                                moved / (spec.hbm_bandwidth * profile.memory_efficiency),
                            )
                            + profile.gemm_floor_s
                        )
                        measured.append(float(value) / 1000.0)
        if measured:
            results[f"vidur_gemm_{vidur_gpu}_mape"] = _mape(np.array(predicted), np.array(measured))
            results[f"vidur_gemm_{vidur_gpu}_ops"] = len(measured)
    return results


def check_vidur_allreduce(perf_dir: Path, profiles: dict[str, KernelProfile], specs: dict) -> dict[str, float]:
    """Vidur's NCCL all-reduce (DGX A100/H100, PyTorch eager) against the measured curves of today's vLLM."""
    results = {}
    for sku, catalog_name in (("a100_dgx", "nvidia-a100-80gb"), ("h100_dgx", "nvidia-h100-80gb")):
        path = perf_dir / "vidur" / "data" / "profiling" / "network" / sku / "all_reduce.csv"
        if not path.exists():
            continue
        predicted, measured = [], []
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                gpus = int(row["num_workers"])
                if gpus < 2 or int(row["devices_per_node"]) < gpus:
                    continue
                size = float(row["size"])  # bytes (as elements it would exceed NVLink's bandwidth)
                predicted.append(
                    profiles[catalog_name].allreduce_s(gpus, size, specs[catalog_name].interconnect_bandwidth)
                )
                measured.append(float(row["time_stats.all_reduce.median"]) / 1000.0)
        if measured:
            results[f"vidur_allreduce_{sku}_mape"] = _mape(np.array(predicted), np.array(measured))
    return results


def check_splitwise_decode(perf_dir: Path) -> dict[str, float]:
    """Splitwise's decode iteration (token_time) over the roofline's decode step for the same batch and context
    (median per GPU and TP)."""

    path = perf_dir / "splitwise-sim" / "perf_model.csv"
    if not path.exists():
        return {}
    model = get_model("meta-llama/Llama-2-70b-hf")
    errors: dict[str, list[float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["model"] != "llama2-70b" or row["hardware"] not in ("a100-80gb", "h100-80gb"):
                continue
            gpu = get_gpu("nvidia-a100-80gb" if row["hardware"] == "a100-80gb" else "nvidia-h100-80gb")
            batch, prompt, tokens = int(row["batch_size"]), int(row["prompt_size"]), int(row["token_size"])
            point = ServingPoint(
                model=model, gpu=gpu, backend="vllm", precision="fp16", tp=int(row["tensor_parallel"]), pp=1,
                dp=1, moe_tp=1, moe_ep=1, batch_per_rank=batch, isl=prompt, osl=tokens,
                max_num_seqs=max(batch, 1), max_num_batched_tokens=max(8192, prompt),
            )
            step_s = physics(point).decode_step_s
            measured = float(row["token_time"]) / 1000.0
            errors.setdefault((row["hardware"], row["tensor_parallel"]), []).append(measured / step_s)
    # 2023 eager stack (no CUDA graphs, NCCL all-reduce): slower than the kernel sum, more so at higher TP
    return {f"splitwise_decode_{hw}_tp{tp}_measured_over_roofline": float(np.median(r)) for (hw, tp), r in errors.items()}


def build(systems: Path, perf_dir: Path) -> tuple[dict, dict]:
    """The profiles fitted on the tables under `systems`, and their fit quality and the independent checks on the
    Vidur data under `perf_dir`."""
    specs = {name: get_gpu(name) for name in MEASURED_GPUS.values()}
    profiles, quality, sources = {}, {}, {}
    for gpu_dir, name in MEASURED_GPUS.items():
        tables = kernel_tables(systems, gpu_dir)
        profiles[name], quality[name] = fit_gpu(tables, specs[name])
        sources[name] = (
            f"{gpu_dir}: vLLM {tables.vllm_version} (custom all-reduce {tables.allreduce_version}), "
            f"NCCL {tables.nccl_version}"
        )
        print(f"  {name}: {json.dumps(_profile_to_json(profiles[name]))[:160]}…", flush=True)
    document = {
        "format": "budsim-kernels/1",
        "source": "aiconfigurator/data/<gpu>/{gemm,attention,comm}",
        "gpus": {name: _profile_to_json(p) for name, p in sorted(profiles.items())},
        "default": _profile_to_json(default_profile(profiles, specs)),
    }
    checks = {
        **check_vidur_gemms(perf_dir, profiles, specs),
        **check_vidur_allreduce(perf_dir, profiles, specs),
    }
    return document, {"fit": quality, "tables": sources, "checks": checks}


def report_markdown(document: dict, quality: dict) -> str:
    lines = [
        "# Kernel profiles (fitted by `python -m budsim.kernel_fit`)",
        "",
        "Efficiencies are fractions of the data-sheet peak; floors are the fixed time of one small kernel.",
        "",
        "| GPU | memory | GEMM bf16 | GEMM fp8 | GEMM floor | decode attn (bandwidth) | prefill attn (compute) | "
        "all-reduce 8 GPUs: latency, bus bandwidth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in [*document["gpus"].items(), ("default (no tables)", document["default"])]:
        ar = p["allreduce"].get("8")
        ar_text = (
            f"{ar['seconds'][0] * 1e6:.1f} µs, {1.75 * ar['sizes'][-1] / ar['seconds'][-1] / 1e9:.0f} GB/s |"
            if ar
            else f"{p['allreduce_latency_s'] * 1e6:.1f} µs, {p['allreduce_bus_share']:.2f} x the spec's NVLink |"
        )
        lines.append(
            f"| {name} | {p['memory_efficiency']:.2f} | {p['gemm_efficiency'].get('bf16', 0):.2f} | "
            f"{p['gemm_efficiency'].get('fp8', float('nan')):.2f} | {p['gemm_floor_s'] * 1e6:.1f} µs | "
            f"{p['decode_attention_efficiency']:.2f} | {p['prefill_attention_efficiency']:.2f} | "
            + ar_text
        )
    lines += ["", f"Tables read ({quality['package']}, systems/data/<gpu>/{{gemm,attention,comm}}):", ""]
    lines += [f"* {name}: {source}" for name, source in quality["tables"].items()]
    lines += ["", "Fit error on the tables themselves (MAPE):", ""]
    for name, errors in quality["fit"].items():
        lines.append(f"* {name}: " + ", ".join(f"{k.removesuffix('_mape')} {v:.1f} %" for k, v in errors.items()))
    lines += ["", "Independent checks (data the fits never saw):", ""]
    for key, value in quality["checks"].items():
        text = f"{int(value)}" if key.endswith("_ops") else f"{value:.1f}" + (" %" if key.endswith("mape") else "x")
        lines.append(f"* {key}: {text}")
    if not quality["checks"]:
        lines.append(f"* not run: {quality['checks_missing']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit per-GPU kernel profiles on the measured kernel tables")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args()
    perf_dir = perf_data_dir()
    try:
        document, quality = build(systems_dir(), perf_dir)
    except KernelTablesMissing as error:
        raise SystemExit(str(error)) from None
    quality["package"] = f"aiconfigurator-core {importlib.metadata.version('aiconfigurator-core')}"
    args.out.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    load_profiles.cache_clear()
    quality["checks"].update(check_splitwise_decode(perf_dir))
    if not quality["checks"]:
        # the profiles do not depend on the checks: kernels.json is complete, only kernels.md lacks them
        quality["checks_missing"] = (
            f"Vidur and Splitwise data not found under {perf_dir}; set {PERF_DATA_ENV} to the folder holding "
            "vidur/ and splitwise-sim/"
        )
        print(f"independent checks not run: {quality['checks_missing']}")
    (args.out.parent / REPORT.name).write_text(report_markdown(document, quality))
    print(json.dumps(quality, indent=2))
    print(f"wrote {args.out} and {REPORT.name}")


if __name__ == "__main__":
    main()
