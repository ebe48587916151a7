"""The hybrid predictor: roofline x exp(XGBoost correction), loaded from the committed JSON artifact.

`predict` answers for one config; `predict_many` answers for many configs of one model/GPU/workload in a single
XGBoost call (what the optimizer uses). `predict_point` is the lower-level form for rows of the perf data.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from budsim.calibration import Calibration, apply, check_applies, decompose, decompose_with_roofs, intervals
from budsim.catalog import GpuSpec, get_gpu
from budsim.features import FEATURE_NAMES
from budsim.fitting import Calibrations, FittedPredictor, booster_from_json
from budsim.kernels import profiles_hash
from budsim.roofline import Roofline, ServingPoint, normalize_backend
from budsim.schemas import Prediction, ServingConfig, Workload
from core.model_facts import ModelArchitecture

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"


class Predictor:
    """The loaded artifact: per-runtime roofline calibrations and the TTFT/TPOT boosters."""

    def __init__(self, artifact_dir: Path = ARTIFACT_DIR) -> None:
        model_path, meta_path = artifact_dir / "predictor.json", artifact_dir / "predictor.meta.json"
        if not model_path.exists() or not meta_path.exists():
            raise FileNotFoundError(f"no trained predictor in {artifact_dir}; run `python -m budsim.train`")
        meta = json.loads(meta_path.read_text())
        if meta.get("features") != FEATURE_NAMES:
            raise RuntimeError("predictor artifact was trained with other features; rerun `python -m budsim.train`")
        if meta.get("kernel_profiles", {}).get("hash") != profiles_hash():
            raise RuntimeError(
                "predictor artifact was trained on other kernel profiles (kernels.json); rerun `python -m budsim.train`"
            )
        document = json.loads(model_path.read_text())
        self.meta = meta
        self.fitted = FittedPredictor(
            calibrations=Calibrations.from_json(meta["calibrations"]),
            ttft_booster=booster_from_json(document["ttft"]),
            tpot_booster=booster_from_json(document["tpot"]),
        )

    def predict_points(self, points: list[ServingPoint]) -> tuple[np.ndarray, np.ndarray, list[Roofline]]:
        """Corrected (ttft_ms, tpot_ms) arrays plus the roofline behind each point."""
        return self.fitted.predict_points(points)

    def predict_with_intervals(
        self, points: list[ServingPoint], calibration: Calibration | None = None
    ) -> dict[str, np.ndarray]:
        """ttft/tpot (ms) and their P10/P90 for every point; `calibration` (for these points' group) corrects
        the physics terms and narrows the intervals. Without one this is `predict_points` plus cold intervals."""
        if not points:
            empty = np.zeros(0)
            return {k: empty for k in ("ttft", "tpot", "ttft_p10", "ttft_p90", "tpot_p10", "tpot_p90")}
        terms = decompose(self.fitted, points)
        ttft, tpot = apply(terms, calibration)
        return {"ttft": ttft, "tpot": tpot, **intervals(terms.backends, ttft, tpot, calibration)}


@lru_cache(maxsize=1)
def default_predictor() -> Predictor:
    return Predictor()


def serving_point(model: ModelArchitecture, gpu: GpuSpec, config: ServingConfig, workload: Workload) -> ServingPoint:
    """One replica of `config` serving its share of the workload's clients."""
    tp = config.tensor_parallel_size
    return ServingPoint(
        model=model,
        gpu=gpu,
        backend=normalize_backend(config.runtime),
        precision=model.precision.name,
        tp=tp,
        pp=config.pipeline_parallel_size,
        dp=1,
        moe_tp=tp,
        moe_ep=1,
        batch_per_rank=max(1, math.ceil(workload.concurrency / config.replicas)),
        isl=workload.input_tokens,
        osl=workload.output_tokens,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        gpu_memory_utilization=config.gpu_memory_utilization,
    )


def _assemble(
    config: ServingConfig,
    workload: Workload,
    ttft: float,
    tpot: float,
    roof: Roofline,
    price: float,
    saturated: tuple[float, float, int],
    bands: dict[str, float],
    calibration: Calibration | None,
) -> Prediction:
    e2e = ttft + max(workload.output_tokens - 1, 0) * tpot
    throughput = workload.concurrency * workload.output_tokens / (e2e / 1000.0)  # closed loop (Little's law)
    full_ttft, full_tpot, clients = saturated
    full_e2e = full_ttft + max(workload.output_tokens - 1, 0) * full_tpot
    capacity = config.replicas * clients * workload.output_tokens / (full_e2e / 1000.0)
    cost_per_hour = config.total_gpus * price
    return Prediction(
        ttft_ms=ttft,
        tpot_ms=tpot,
        e2e_latency_ms=e2e,
        output_throughput_tps=throughput,
        max_throughput_tps=max(capacity, throughput),
        cost_per_hour=cost_per_hour,
        cost_per_million_tokens=cost_per_hour / (throughput * 3600.0) * 1e6,
        roofline_ttft_ms=roof.ttft_ms,
        roofline_tpot_ms=roof.tpot_ms,
        running_per_replica=roof.running_per_rank,
        queued=roof.admission_ratio > 1.0 or roof.kv_queue_ratio > 1.0,
        ttft_p10_ms=bands["ttft_p10"],
        ttft_p90_ms=bands["ttft_p90"],
        tpot_p10_ms=bands["tpot_p10"],
        tpot_p90_ms=bands["tpot_p90"],
        e2e_latency_p10_ms=bands["ttft_p10"] + max(workload.output_tokens - 1, 0) * bands["tpot_p10"],
        e2e_latency_p90_ms=bands["ttft_p90"] + max(workload.output_tokens - 1, 0) * bands["tpot_p90"],
        calibrated=calibration is not None,
        calibration_warning=None if calibration is None or calibration.consistent else calibration.message,
    )


def predict_many(
    model: ModelArchitecture,
    gpu: str | GpuSpec,
    configs: list[ServingConfig],
    workload: Workload,
    price_per_hour: float | None = None,
    predictor: Predictor | None = None,
    calibration: Calibration | tuple[float, float] | None = None,
) -> list[Prediction]:
    """Predictions for many configs of one model on one GPU type (one XGBoost call), with P10-P90 intervals.

    Each config is predicted twice: under the workload, and saturated (max_num_seqs clients per replica) for
    its capacity. `calibration` is a `budsim.calibration.Calibration` of this model/GPU/runtime/precision
    (corrects the physics terms, narrows the intervals), or plain (TTFT, TPOT) scales, e.g. by what a deployment
    measured against its prediction.
    """
    spec = gpu if isinstance(gpu, GpuSpec) else get_gpu(gpu)
    price = spec.price_per_hour if price_per_hour is None else price_per_hour
    predictor = predictor or default_predictor()
    points = [serving_point(model, spec, c, workload) for c in configs]
    saturated = [replace(p, batch_per_rank=c.max_num_seqs) for p, c in zip(points, configs)]
    group_calibration = calibration if isinstance(calibration, Calibration) else None
    scales = (1.0, 1.0) if calibration is None or group_calibration is not None else calibration
    everything = points + saturated
    if group_calibration is not None and points:
        check_applies(group_calibration, points[0])
    terms, roofs = decompose_with_roofs(predictor.fitted, everything)
    ttft, tpot = apply(terms, group_calibration)
    ttft, tpot = ttft * scales[0], tpot * scales[1]
    bands = intervals(terms.backends, ttft, tpot, group_calibration)
    n = len(configs)
    return [
        _assemble(
            c,
            workload,
            float(ttft[i]),
            float(tpot[i]),
            roofs[i],
            price,
            (float(ttft[n + i]), float(tpot[n + i]), c.max_num_seqs),
            {key: float(values[i]) for key, values in bands.items()},
            group_calibration,
        )
        for i, c in enumerate(configs)
    ]


def predict(
    model: ModelArchitecture,
    gpu: str,
    config: ServingConfig,
    workload: Workload,
    price_per_hour: float | None = None,
    calibration: Calibration | None = None,
) -> Prediction:
    """Predicted TTFT, TPOT (with P10-P90), end-to-end latency, throughput and cost of `config` serving `workload`;
    `calibration` (from `budsim.calibration.calibrate` on this group's measurements) corrects it.

    Does not check that the config fits (see `budsim.constraints.check_config`).
    """
    return predict_many(model, gpu, [config], workload, price_per_hour, calibration=calibration)[0]
