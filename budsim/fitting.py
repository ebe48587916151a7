"""Fit the hybrid predictor: per-runtime calibration of the roofline, then XGBoost on log(measured / roofline).

Shared by `budsim.train` (fits on all data, writes the artifact) and `budsim.evaluate` (fits once per held-out
group on the other groups only), so the evaluated procedure is exactly the shipped one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import xgboost as xgb
from scipy.optimize import lsq_linear

from budsim.dataset import Sample
from budsim.features import FEATURE_NAMES, feature_vector
from budsim.roofline import (
    BACKENDS,
    DEFAULT_CALIBRATION,
    Calibration,
    Physics,
    Roofline,
    ServingPoint,
    admission_wait_ms,
    physics,
    to_roofline,
)

# Robust fitting of the calibration: relative-error least squares, re-weighted so rows off by more than
# HUBER_RELATIVE count linearly (noisy high-concurrency rows cannot drag the runtime constants).
HUBER_RELATIVE = 0.15
IRLS_ROUNDS = 6

BOOSTER_PARAMS: dict[str, object] = {
    "objective": "reg:pseudohubererror",
    "huber_slope": 0.2,  # in log units: rows off by more than ~20 % count linearly, not squared (noisy TTFT)
    "eta": 0.05,
    "max_depth": 5,
    "min_child_weight": 3.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "tree_method": "hist",
    "nthread": 2,
}
NUM_ROUNDS = 400


@dataclass
class Calibrations:
    """One `Calibration` per runtime; runtimes without training rows get the defaults."""

    by_backend: dict[str, Calibration] = field(default_factory=dict)

    def for_backend(self, backend: str) -> Calibration:
        return self.by_backend.get(backend, DEFAULT_CALIBRATION)

    def to_json(self) -> dict:
        return {name: asdict(cal) for name, cal in sorted(self.by_backend.items())}

    @classmethod
    def from_json(cls, document: dict) -> "Calibrations":
        return cls({name: Calibration(**values) for name, values in document.items()})


def _robust_bounded_lsq(
    columns: np.ndarray, target: np.ndarray, measured: np.ndarray, bounds: tuple[list[float], list[float]]
) -> np.ndarray:
    """x within `bounds` minimising sum(huber((columns @ x - target) / measured)), by iteratively re-weighted
    bounded least squares."""
    weights = 1.0 / measured
    x = np.asarray(bounds[0], dtype=float)
    for _ in range(IRLS_ROUNDS):
        x = lsq_linear(columns * weights[:, None], target * weights, bounds=bounds).x
        relative = np.abs(columns @ x - target) / measured
        weights = np.where(relative > HUBER_RELATIVE, HUBER_RELATIVE / np.maximum(relative, 1e-12), 1.0) / measured
    return x


# Physical bounds: kernels cannot beat the roofline's efficiency assumptions by much (scales >= 0.7-0.8), and
# at most all of the arriving prompts' work lands in decode steps.
TPOT_BOUNDS = ([0.8, 0.0], [5.0, 1.5])  # decode_scale, interference
TTFT_BOUNDS = ([0.7, 0.0], [5.0, 1.0])  # prefill_scale, contention


def fit_calibrations(samples: list[Sample], phys: list[Physics]) -> Calibrations:
    """Fit each runtime's constants (see `Calibration`): TPOT's on all its rows, then TTFT's on rows without
    queueing. Both models are linear in the constants, so this is a robust bounded least squares."""
    fitted = Calibrations()
    for backend in BACKENDS:
        idx = [i for i, s in enumerate(samples) if s.point.backend == backend]
        if len(idx) < 8:
            continue
        ph = [phys[i] for i in idx]
        col = lambda name: np.array([getattr(p, name) for p in ph], dtype=float)  # noqa: E731
        decode, stage, pp, pp_lat = col("decode_step_s"), col("stage_s"), col("pp"), col("pp_latency_s")
        tpot = np.array([samples[i].tpot_ms for i in idx]) / 1000.0
        columns = np.stack([pp * decode, pp * (stage - decode)], axis=1)
        decode_scale, interference = _robust_bounded_lsq(columns, tpot - pp_lat, tpot, TPOT_BOUNDS)

        calm = (col("kv_queue_ratio") <= 1.0) & (col("admission_ratio") <= 1.0)
        known = pp_lat + 0.5 * (decode_scale * decode + interference * (stage - decode))
        waiting = (col("running_per_rank") - 1.0) * col("prefill_alone_s")
        ttft = np.array([samples[i].ttft_ms for i in idx]) / 1000.0
        columns = np.stack([col("chunks") * pp * col("chunk_s"), waiting], axis=1)
        prefill_scale, contention = _robust_bounded_lsq(columns[calm], (ttft - known)[calm], ttft[calm], TTFT_BOUNDS)
        fitted.by_backend[backend] = Calibration(
            decode_scale=float(decode_scale),
            interference=float(interference),
            prefill_scale=float(prefill_scale),
            contention=float(contention),
        )
    return fitted


def design_matrix(
    points: list[ServingPoint], phys: list[Physics], calibrations: Calibrations
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features plus the roofline's TTFT and TPOT (ms) for each point."""
    rows, base_ttft, base_tpot = [], [], []
    for point, p in zip(points, phys):
        roof = to_roofline(p, calibrations.for_backend(point.backend))
        rows.append(feature_vector(point, roof))
        base_ttft.append(roof.ttft_ms)
        base_tpot.append(roof.tpot_ms)
    return np.asarray(rows, dtype=np.float64), np.asarray(base_ttft), np.asarray(base_tpot)


def group_weights(samples: list[Sample]) -> np.ndarray:
    """1/sqrt(group size): big groups still count more, but cannot drown the small ones."""
    sizes = Counter(s.group for s in samples)
    return np.asarray([1.0 / math.sqrt(sizes[s.group]) for s in samples])


@dataclass
class FittedPredictor:
    calibrations: Calibrations
    ttft_booster: xgb.Booster
    tpot_booster: xgb.Booster

    def corrections(
        self, points: list[ServingPoint], phys: list[Physics] | None = None
    ) -> tuple[list[Roofline], np.ndarray, np.ndarray]:
        """Each point's roofline plus the learned (TTFT, TPOT) factors, exp(booster), that multiply it."""
        phys = phys if phys is not None else [physics(p) for p in points]
        roofs = [to_roofline(p, self.calibrations.for_backend(point.backend)) for point, p in zip(points, phys)]
        features = np.asarray([feature_vector(point, roof) for point, roof in zip(points, roofs)], dtype=np.float64)
        matrix = xgb.DMatrix(features, feature_names=FEATURE_NAMES)
        return roofs, np.exp(self.ttft_booster.predict(matrix)), np.exp(self.tpot_booster.predict(matrix))

    def predict_points(
        self, points: list[ServingPoint], phys: list[Physics] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[Roofline]]:
        """Corrected (ttft_ms, tpot_ms) per point, waits for a scheduler slot included, plus each point's roofline."""
        if not points:
            return np.zeros(0), np.zeros(0), []
        roofs, ttft_factor, tpot_factor = self.corrections(points, phys)
        ttft = np.array([r.ttft_ms for r in roofs]) * ttft_factor
        tpot = np.array([r.tpot_ms for r in roofs]) * tpot_factor
        wait = np.array(
            [admission_wait_ms(r.admission_ratio, a, b, p.osl) for r, a, b, p in zip(roofs, ttft, tpot, points)]
        )
        return ttft + wait, tpot, roofs


def fit(samples: list[Sample], seed: int, phys: list[Physics] | None = None) -> FittedPredictor:
    """Fit calibrations and both boosters on `samples` (deterministic for a given seed and data)."""
    phys = phys if phys is not None else [physics(s.point) for s in samples]
    calibrations = fit_calibrations(samples, phys)
    features, base_ttft, base_tpot = design_matrix([s.point for s in samples], phys, calibrations)
    weights = group_weights(samples)
    boosters = []
    for measured, base in (
        (np.array([s.ttft_ms for s in samples]), base_ttft),
        (np.array([s.tpot_ms for s in samples]), base_tpot),
    ):
        target = np.log(measured / base)
        matrix = xgb.DMatrix(features, label=target, weight=weights, feature_names=FEATURE_NAMES)
        boosters.append(xgb.train({**BOOSTER_PARAMS, "seed": seed}, matrix, NUM_ROUNDS))
    return FittedPredictor(calibrations, boosters[0], boosters[1])


def booster_to_json(booster: xgb.Booster) -> dict:
    return json.loads(bytes(booster.save_raw("json")))


def booster_from_json(document: dict) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(bytearray(json.dumps(document).encode()))
    return booster
