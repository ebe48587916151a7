"""Silicon profiles: how fast measured GPUs really served a model, as a small fit the simulated runtime can use.

`python -m budsim.silicon_profile [--data PATH] [--out PATH]` reads the measured serving data (silicon_sample.csv,
found by `budsim.dataset.perf_data_dir`, or given with --data) and writes budsim/artifacts/silicon_profiles.json
(or --out). `profile_timing(facts, gpu_type, runtime, tensor_parallel_size, max_num_seqs)` answers from that
committed file alone, so it works in a checkout without the measured data.

Which rows: aggregated-mode rows that `budsim.dataset.point_from_row` accepts, with one attention rank and one
pipeline stage (the simulated runtime is a single tensor-parallel group), a positive measured TTFT and TPOT, and
weights that fit the row's GPUs. Rows group by (catalog model, canonical GPU type, runtime, precision), where the
catalog model is the first Hugging Face id of its `budsim.catalog` entry, the GPU the name `get_gpu` gives, the
runtime as the data spells it (vllm, sglang, trtllm) and the precision the row's (or else the model's dtype).

The fit, per group and tensor-parallel size, by least squares in log space (natural logarithms):

    log TPOT = tpot.a + tpot.concurrency_exp x log(concurrency) + tpot.context_exp x log(isl + osl)
    log TTFT = ttft.a + ttft.prompt_exp x log(isl) + ttft.concurrency_exp x log(concurrency)

`concurrency` is the row's batch_size (clients per rank). TTFT is fitted on the low-load rows only (concurrency at
most 4x the smallest measured for that TP), where it is prefill rather than queueing. A variable enters a fit only
when the rows hold at least two values of it and one more row than there are coefficients; an exponent that comes
out negative (time falling with more load or longer inputs, which is noise) is dropped and the rest refitted, so
every exponent is >= 0. Each fit records its rows, the measured ranges and the RMS error in log space.

`profile_timing` evaluates the fit for one request (concurrency 1): TTFT with a `ref_prompt_tokens` prompt, TPOT
at a context of twice that (prompt plus as long a reply), clamped to the measured context range;
`batch_tpot_factor` is TPOT at concurrency `max_num_seqs` over TPOT at 1, minus one (`max_num_seqs` ^
concurrency_exp - 1; the power law is extended beyond the measured concurrencies).

Coefficients are rounded to 6 significant digits and the JSON is written with sorted keys, so the same data gives
a byte-identical file; the CLI prints its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from budsim.catalog import _model_table, get_gpu
from budsim.dataset import SILICON_CSV, PerfDataMissing, data_hash, point_from_row, read_rows
from budsim.errors import InvalidRequest
from budsim.roofline import model_sizes, normalize_backend, weight_bytes_per_gpu
from core.model_facts import ModelArchitecture

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "silicon_profiles.json"
FORMAT = "budsim-silicon-profiles/1"
# TTFT is fitted on rows with concurrency up to this multiple of the smallest measured one.
LOW_LOAD_MULTIPLE = 4
SIGNIFICANT_DIGITS = 6
# Architecture facts that must agree for a model to share a catalog model's measurements.
ARCHITECTURE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "intermediate_size",
                       "num_experts")


class ProfileTiming(BaseModel):
    """Timing for the simulated runtime, read off a measured silicon profile."""

    ttft_ms: float = Field(gt=0, description="one request alone, with a ref_prompt_tokens prompt")
    tpot_ms: float = Field(gt=0, description="one request alone")
    batch_tpot_factor: float = Field(
        ge=0, description="tpot_ms x (1 + batch_tpot_factor) is the profile's TPOT at concurrency max_num_seqs"
    )
    group: str = Field(description="the measurements used, e.g. 'meta-llama/Llama-3.1-70B on nvidia-h100-80gb, "
                       "vllm, fp8, tp 4 (45 rows)'")


# ---------------------------------------------------------------------------------------------------------------
# fitting


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when the system is singular."""
    size = len(vector)
    rows = [list(matrix[i]) + [vector[i]] for i in range(size)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-12:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(size):
            if r != col:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return [rows[i][size] / rows[i][i] for i in range(size)]


def _log_fit(targets: list[float], variables: dict[str, list[float]]) -> dict[str, Any]:
    """Least squares of log(target) on an intercept plus log(variable) for each variable that can be fitted.

    Returns {"a": intercept, "<name>_exp": exponent (0 when not fitted), "rows", "rmse_log"}.
    """
    y = [math.log(t) for t in targets]
    logs = {name: [math.log(v) for v in values] for name, values in variables.items()}
    n = len(y)
    usable = [name for name, values in logs.items() if len(set(values)) >= 2]
    while True:
        usable = usable[: max(0, n - 2)]  # keep one more row than coefficients
        columns = [[1.0] * n] + [logs[name] for name in usable]
        normal = [[sum(a * b for a, b in zip(ci, cj)) for cj in columns] for ci in columns]
        rhs = [sum(a * b for a, b in zip(ci, y)) for ci in columns]
        solution = _solve(normal, rhs)
        if solution is None:  # collinear variables: drop the last one
            usable = usable[:-1]
            continue
        negative = [name for name, coef in zip(usable, solution[1:]) if coef < 0]
        if not negative:
            break
        usable = [name for name in usable if name not in negative]
    exponents = dict(zip(usable, solution[1:]))
    residuals = [
        yi - solution[0] - sum(exponents[name] * logs[name][i] for name in usable) for i, yi in enumerate(y)
    ]
    fit: dict[str, Any] = {"a": _round(solution[0]), "rows": n,
                           "rmse_log": _round(math.sqrt(sum(r * r for r in residuals) / n))}
    for name in variables:
        fit[f"{name}_exp"] = _round(exponents.get(name, 0.0))
    return fit


def _canonical_model_id(hf_id: str) -> str:
    entry = _model_table().get((hf_id or "").strip().lower())
    if entry is None:
        raise InvalidRequest("model", f"unknown model {hf_id!r}")
    return entry.ids[0]


def _usable(row: dict[str, str]) -> tuple[tuple[str, str, str, str, int], dict[str, float]] | str:
    """(group key with TP, measurement) for a row the profiles can use, else the reason it is skipped."""
    try:
        point = point_from_row(row)
        ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    except InvalidRequest as error:
        return error.field
    except (KeyError, ValueError):
        return "measurement"
    if not (ttft > 0 and tpot > 0 and math.isfinite(ttft) and math.isfinite(tpot)):
        return "measurement"
    if point.dp != 1 or point.pp != 1:
        return "attention data-parallel or pipeline layout"
    if weight_bytes_per_gpu(point, model_sizes(point.model, point.precision, 1.0)) > point.gpu.memory_bytes:
        return "weights exceed the row's GPUs"
    key = (_canonical_model_id(row["model_path"]), point.gpu.name, point.backend, point.precision, point.tp)
    measured = {"ttft": ttft, "tpot": tpot, "concurrency": float(point.batch_per_rank),
                "isl": float(point.isl), "context": float(point.isl + point.osl)}
    return key, measured


def _fit_tp(samples: list[dict[str, float]]) -> dict[str, Any]:
    concurrency = [s["concurrency"] for s in samples]
    context = [s["context"] for s in samples]
    low_load = [s for s in samples if s["concurrency"] <= LOW_LOAD_MULTIPLE * min(concurrency)]
    return {
        "rows": len(samples),
        "concurrency_range": [_round(min(concurrency)), _round(max(concurrency))],
        "context_range": [_round(min(context)), _round(max(context))],
        "tpot": _log_fit([s["tpot"] for s in samples], {"concurrency": concurrency, "context": context}),
        "ttft": _log_fit([s["ttft"] for s in low_load],
                         {"prompt": [s["isl"] for s in low_load], "concurrency": [s["concurrency"] for s in low_load]}),
    }


def build_profiles(rows: list[dict[str, str]]) -> dict:
    """Fit every group's profiles from silicon_sample.csv rows; returns the artifact's body (without the data hash).

    {"format", "rows", "skipped": {reason: count}, "groups": [{"model", "gpu", "runtime", "precision",
    "tp": {"<tp>": {"rows", "concurrency_range", "context_range", "tpot": {...}, "ttft": {...}}}}]}
    """
    grouped: dict[tuple[str, str, str, str, int], list[dict[str, float]]] = {}
    skipped: dict[str, int] = {}
    for row in rows:
        usable = _usable(row)
        if isinstance(usable, str):
            skipped[usable] = skipped.get(usable, 0) + 1
            continue
        key, measured = usable
        grouped.setdefault(key, []).append(measured)
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for key in sorted(grouped):
        model, gpu, runtime, precision, tp = key
        # rows in a canonical order so the sums (and the file) do not depend on the CSV's row order
        samples = sorted(grouped[key], key=lambda s: (s["concurrency"], s["isl"], s["context"], s["ttft"], s["tpot"]))
        group = groups.setdefault(
            (model, gpu, runtime, precision),
            {"model": model, "gpu": gpu, "runtime": runtime, "precision": precision, "tp": {}},
        )
        group["tp"][str(tp)] = _fit_tp(samples)
    return {
        "format": FORMAT,
        "rows": sum(len(samples) for samples in grouped.values()),
        "skipped": dict(sorted(skipped.items())),
        "groups": list(groups.values()),
    }


def render(profiles: dict) -> str:
    """The artifact's exact text: sorted keys, so equal profiles give equal bytes."""
    return json.dumps(profiles, indent=1, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# answering


def _architecture_key(facts: ModelArchitecture) -> tuple[int, ...]:
    return tuple(getattr(facts, name) for name in ARCHITECTURE_FIELDS)


def _evaluate(fit: dict[str, Any], **values: float) -> float:
    return math.exp(fit["a"] + sum(fit[f"{name}_exp"] * math.log(value) for name, value in values.items()))


def timing_from_profiles(
    profiles: dict,
    facts: ModelArchitecture,
    gpu_type: str,
    runtime: str,
    tensor_parallel_size: int,
    max_num_seqs: int,
    ref_prompt_tokens: int = 512,
) -> ProfileTiming | None:
    """`profile_timing` over the given profiles (the body `build_profiles` returns)."""
    try:
        gpu = get_gpu(gpu_type).name
    except InvalidRequest:
        return None
    backend = normalize_backend(runtime)
    precision = facts.precision.name
    wanted = _architecture_key(facts)
    target = max(1, tensor_parallel_size)
    candidates = []
    for group in profiles.get("groups", []):
        if (group["gpu"], group["runtime"], group["precision"]) != (gpu, backend, precision):
            continue
        entry = _model_table().get(group["model"].lower())
        if entry is None or _architecture_key(entry.architecture) != wanted:
            continue
        for tp_text, fit in group["tp"].items():
            tp = int(tp_text)
            distance = abs(math.log2(tp) - math.log2(target))
            candidates.append(((distance, -fit["rows"], tp, group["model"]), group, tp, fit))
    if not candidates:
        return None
    _, group, tp, fit = min(candidates, key=lambda candidate: candidate[0])
    low, high = fit["context_range"]
    context = min(max(2.0 * ref_prompt_tokens, low), high)
    ttft = _evaluate(fit["ttft"], prompt=ref_prompt_tokens, concurrency=1)
    tpot = _evaluate(fit["tpot"], concurrency=1, context=context)
    factor = max(0.0, max(1, max_num_seqs) ** fit["tpot"]["concurrency_exp"] - 1.0)
    note = "" if tp == target else f"; nearest measured to tp {target}"
    name = (f"{group['model']} on {group['gpu']}, {group['runtime']}, {group['precision']}, tp {tp} "
            f"({fit['rows']} rows{note})")
    return ProfileTiming(ttft_ms=ttft, tpot_ms=tpot, batch_tpot_factor=factor, group=name)


@lru_cache(maxsize=1)
def _committed_profiles() -> dict:
    return json.loads(ARTIFACT.read_text())


def profile_timing(
    facts: ModelArchitecture,
    gpu_type: str,
    runtime: str,
    tensor_parallel_size: int,
    max_num_seqs: int,
    ref_prompt_tokens: int = 512,
) -> ProfileTiming | None:
    """Timing from the committed profiles for a model (matched by architecture and precision), GPU and runtime.

    `runtime` as the API spells it ('vllm', 'sglang', 'tensorrt-llm'); the nearest measured TP stands in when
    `tensor_parallel_size` was not measured (the group says so); None when no measurement covers the model,
    GPU type, runtime and precision.
    """
    return timing_from_profiles(
        _committed_profiles(), facts, gpu_type, runtime, tensor_parallel_size, max_num_seqs, ref_prompt_tokens
    )


# ---------------------------------------------------------------------------------------------------------------
# command line


def build(out: Path, data: Path | None = None) -> tuple[dict, str]:
    """Fit on `data` (default: the measured silicon_sample.csv), write `out`; returns the body and the file's sha256."""
    profiles = build_profiles(read_rows(data))
    profiles["data"] = {"file": SILICON_CSV if data is None else data.name, "hash": data_hash(data)}
    text = render(profiles)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return profiles, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit per-model, per-GPU silicon profiles from the measured perf data")
    parser.add_argument("--data", type=Path, help=f"a CSV in silicon_sample.csv's columns (default: {SILICON_CSV} "
                        "under the measured-data folder)")
    parser.add_argument("--out", type=Path, default=ARTIFACT)
    args = parser.parse_args()
    try:
        profiles, digest = build(args.out, args.data)
    except PerfDataMissing as error:
        raise SystemExit(str(error)) from None
    fits = sum(len(group["tp"]) for group in profiles["groups"])
    print(f"fitted {len(profiles['groups'])} groups ({fits} TP fits) on {profiles['rows']} rows; "
          f"skipped {profiles['skipped']}")
    print(f"wrote {args.out} ({digest})")


if __name__ == "__main__":
    main()
