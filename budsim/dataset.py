"""Measured end-to-end serving data (aiconfigurator's silicon_sample.csv) as ServingPoints with targets.

The data is not part of the project: `perf_data_dir()` looks for it in the `shared/data/perf` folder beside the
project checkout, or in the folder BUDSIM_PERF_DATA names. Training and evaluation read it; the tests use the
handful of rows in tests/budsim/fixtures/. Only aggregated-mode rows (prefill and decode on the same GPUs)
describe what our deployments run; disaggregated rows are skipped with a reason, like rows whose model or GPU the
catalogs do not know.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from budsim.catalog import get_gpu, get_model
from budsim.errors import InvalidRequest
from budsim.roofline import ServingPoint, model_sizes, normalize_backend, precision_of, weight_bytes_per_gpu

SILICON_CSV = "aiconfigurator/silicon_sample.csv"
PERF_DATA_ENV = "BUDSIM_PERF_DATA"


class PerfDataMissing(FileNotFoundError):
    """The measured data is not where it was looked for; the message says where and how to point elsewhere."""


def perf_data_dir() -> Path:
    """The folder BUDSIM_PERF_DATA names, else `shared/data/perf` beside the project checkout."""
    override = os.environ.get(PERF_DATA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "perf"


def silicon_csv(path: Path | None = None) -> Path:
    """`path`, or silicon_sample.csv under `perf_data_dir()`; raises PerfDataMissing when the file is absent."""
    path = path or perf_data_dir() / SILICON_CSV
    if not path.is_file():
        raise PerfDataMissing(
            f"measured data not found at {path}; set {PERF_DATA_ENV} to the folder that holds {SILICON_CSV} "
            "(aiconfigurator's measured serving data), or pass a CSV in its columns with --data"
        )
    return path


@dataclass(frozen=True)
class Sample:
    """One measured row: where it ran, what was measured, and which leave-out group it belongs to."""

    point: ServingPoint
    ttft_ms: float
    tpot_ms: float
    group: tuple[str, str, str]  # (model_path, system, backend)
    row_id: str


def _int(value: str | None, default: int) -> int:
    try:
        number = float(value) if value not in (None, "") else math.nan
    except ValueError:
        return default
    return default if math.isnan(number) or number <= 0 else int(number)


def point_from_row(row: dict[str, str]) -> ServingPoint:
    """Build a ServingPoint from a silicon_sample.csv row; raises InvalidRequest saying why it cannot."""
    mode = (row.get("mode") or "agg").strip()
    if mode != "agg":
        raise InvalidRequest("mode", f"only aggregated serving is modelled, not {mode!r}")
    model = get_model(row.get("model_path", ""))
    gpu = get_gpu(row.get("system", ""))
    backend = normalize_backend(row.get("backend", ""))
    if backend not in ("vllm", "sglang", "trtllm"):
        raise InvalidRequest("backend", f"unknown backend {row.get('backend')!r}")
    precision = precision_of(row.get("precision") or "") if row.get("precision") else precision_of(model.dtype)
    isl, osl, batch = _int(row.get("isl"), 0), _int(row.get("osl"), 0), _int(row.get("batch_size"), 0)
    if not (isl and osl and batch):
        raise InvalidRequest("isl/osl/batch_size", "isl, osl and batch_size must be positive numbers")
    tp = _int(row.get("tp_size"), 1)
    dp = _int(row.get("attention_dp_size"), 1)
    return ServingPoint(
        model=model,
        gpu=gpu,
        backend=backend,
        precision=precision,
        tp=tp,
        pp=_int(row.get("pp_size"), 1),
        dp=dp,
        moe_tp=_int(row.get("moe_tp_size"), tp),
        moe_ep=_int(row.get("moe_ep_size"), 1),
        batch_per_rank=batch,
        isl=isl,
        osl=osl,
    )


def read_rows(path: Path | None = None) -> list[dict[str, str]]:
    with open(silicon_csv(path), newline="") as handle:
        return list(csv.DictReader(handle))


def data_hash(path: Path | None = None) -> str:
    return "sha256:" + hashlib.sha256(silicon_csv(path).read_bytes()).hexdigest()


def load_samples(path: Path | None = None) -> tuple[list[Sample], dict[str, int]]:
    """All usable agg rows, plus a count of skipped rows by reason."""
    samples: list[Sample] = []
    skipped: dict[str, int] = {}
    for row in read_rows(path):
        try:
            point = point_from_row(row)
            ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
            if not (ttft > 0 and tpot > 0):
                raise InvalidRequest("silicon", "missing measurement")
        except (InvalidRequest, KeyError, ValueError) as error:
            reason = error.field if isinstance(error, InvalidRequest) else "measurement"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        if weight_bytes_per_gpu(point, model_sizes(point.model, point.precision, 1.0)) > point.gpu.memory_bytes:
            # The recorded parallelism cannot even hold the weights (e.g. a 235B fp8 model on one 141 GB GPU):
            # the row's config columns are wrong, so it cannot teach or test anything.
            skipped["weights exceed the row's GPUs"] = skipped.get("weights exceed the row's GPUs", 0) + 1
            continue
        group = (row["model_path"], row["system"], point.backend)
        samples.append(Sample(point, ttft, tpot, group, row.get("id", "")))
    return samples, skipped
