"""Calibrating the predictor on a few measurements of one deployment group, and P10-P90 intervals.

A deployment group is one model on one GPU type under one runtime at one quantization. Its measurements (TTFT and
TPOT of a few configs) fit a small correction that lives inside the physics: coefficients on the predictor's own
terms, each carrying the learned correction factor that multiplies the roofline.

TPOT = e^(g+w) x weight reads + e^(g+b) x per-sequence work (KV reads, compute) + e^(g+c) x tensor-parallel
       all-reduces + e^(g+i) x arriving prompts' prefill work + pipeline hops + o  (o >= 0: a fixed per-step overhead)
TTFT = e^(h+p) x chunked prefill + e^(h+s) x half a decode step + (contention + q) x the other running requests'
       prefills + u (u >= 0: a fixed per-request overhead) + k x the analytic wait for KV-cache room (k >= 0),
       plus the wait for a scheduler slot.

The fit is a ridge in log space towards the uncalibrated model (all coefficients 0): each measurement's log error
counts 1/MEASUREMENT_SIGMA, each coefficient its prior 1/PRIOR_*. One level (g, h) is shared by the terms, with a
wider prior than the per-term deviations, so a single measurement mostly moves the level while several also reshape
how the prediction grows with concurrency, TP and lengths. The fit is deterministic (a fixed start, no sampling).

When the residuals left after fitting are larger than the correction can explain (RESIDUAL_BOUND), the calibration
is flagged (`consistent` False and a message): its predictions keep the fit but their intervals take the full
spread the measurements showed, not a narrowed one.

Intervals: uncalibrated predictions take the P10/P90 of log(measured / predicted) of the cold model on groups it
was not trained on (per runtime, `budsim/artifacts/intervals.json`, written by `python -m budsim.evaluate`).
Calibrated ones take a spread that starts from the within-group spread of the cold model and moves to the group's
own fitted residual spread as measurements accumulate, widened by 1 + 1/(n + 3) for the level's own uncertainty,
and never wider than the cold interval.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import least_squares

from budsim.errors import InvalidRequest
from budsim.fitting import FittedPredictor
from budsim.kernels import profile_for
from budsim.roofline import Physics, ServingPoint, admission_wait_ms, physics

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
INTERVALS_ARTIFACT = ARTIFACT_DIR / "intervals.json"

# Prior strengths (log units): how far one measurement's log error may pull the coefficients.
MEASUREMENT_SIGMA = {"tpot": 0.15, "ttft": 0.40}  # expected log error of one measurement against a right model
PRIOR_LEVEL = {"tpot": 0.5, "ttft": 0.7}  # shared level g / h
PRIOR_TERM = 0.3  # each term's deviation from the level
PRIOR_OVERHEAD = 0.1  # fixed overheads, in units of the group's median cold prediction
PRIOR_QUEUE = 0.1  # extra share of the other running requests' prefills
PRIOR_KV_WAIT = 0.3  # share of the analytic wait for KV-cache room
# Residual spread (RMS of log(measured / calibrated)) above which the measurements are called inconsistent.
RESIDUAL_BOUND = {"tpot": 0.25, "ttft": 0.40}
# Pseudo-count of the within-group spread in the calibrated intervals' spread.
SPREAD_PRIOR_COUNT = 3.0
Z90 = 1.2815515655446004  # P90 of the standard normal

TPOT_TERMS = ("weights", "batch", "comm", "interference")
TTFT_TERMS = ("prefill", "step")


class CalibrationGroup(BaseModel):
    """Model, GPU type, runtime and quantization: what a calibration applies to."""

    model_config = ConfigDict(frozen=True)

    model: str
    gpu: str
    runtime: str
    precision: str

    def label(self) -> str:
        return f"{self.model} / {self.gpu} / {self.runtime} / {self.precision}"


def group_of(point: ServingPoint, model: str) -> CalibrationGroup:
    """The group of a point of `model` (its catalog or Hugging Face id: architectures carry no name)."""
    return CalibrationGroup(model=model, gpu=point.gpu.name, runtime=point.backend, precision=point.precision)


@dataclass(frozen=True)
class Measurement:
    """One measured config of a group: where it ran and its mean TTFT and TPOT (ms)."""

    point: ServingPoint
    ttft_ms: float
    tpot_ms: float
    id: str = ""

    def key(self) -> str:
        """The row's id, else a hash of what was measured."""
        if self.id:
            return self.id
        p = self.point
        text = json.dumps(
            [p.tp, p.pp, p.dp, p.moe_tp, p.moe_ep, p.batch_per_rank, p.isl, p.osl, p.max_num_seqs,
             p.max_num_batched_tokens, round(self.ttft_ms, 6), round(self.tpot_ms, 6)]
        )
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


class TpotCoefficients(BaseModel):
    model_config = ConfigDict(frozen=True)

    weights_scale: float = Field(1.0, description="multiplies the time to read the weights each step")
    batch_scale: float = Field(1.0, description="multiplies the per-sequence work of a step (KV reads, compute)")
    comm_scale: float = Field(1.0, description="multiplies the tensor-parallel all-reduces")
    interference_scale: float = Field(1.0, description="multiplies the arriving prompts' prefill work per step")
    step_overhead_ms: float = Field(0.0, ge=0.0, description="fixed time every decode step adds")


class TtftCoefficients(BaseModel):
    model_config = ConfigDict(frozen=True)

    prefill_scale: float = Field(1.0, description="multiplies the chunked prefill")
    step_scale: float = Field(1.0, description="multiplies the half decode step a new request waits")
    queue_share: float = Field(0.0, description="extra share of the other running requests' prefills waited behind")
    kv_wait_share: float = Field(
        0.0, ge=0.0, description="share of the analytic wait for KV-cache room (admitted beyond what the cache holds)"
    )
    request_overhead_ms: float = Field(0.0, ge=0.0, description="fixed time every request adds before its first token")


class CalibrationPrior(BaseModel):
    """The prior strengths the coefficients were fitted with (log units unless stated)."""

    model_config = ConfigDict(frozen=True)

    measurement_sigma: dict[str, float] = Field(default_factory=lambda: dict(MEASUREMENT_SIGMA))
    level: dict[str, float] = Field(default_factory=lambda: dict(PRIOR_LEVEL))
    term: float = PRIOR_TERM
    overhead_share: float = PRIOR_OVERHEAD
    queue_share: float = PRIOR_QUEUE
    kv_wait_share: float = PRIOR_KV_WAIT
    residual_bound: dict[str, float] = Field(default_factory=lambda: dict(RESIDUAL_BOUND))


class Calibration(BaseModel):
    """A group's fitted correction; `predict(..., calibration=...)` applies it to every later prediction."""

    model_config = ConfigDict(frozen=True)

    group: CalibrationGroup
    measurements: list[str] = Field(description="ids (or content hashes) of the measurements used")
    n: int = Field(ge=1)
    tpot: TpotCoefficients = Field(default_factory=TpotCoefficients)
    ttft: TtftCoefficients = Field(default_factory=TtftCoefficients)
    tpot_residual_sigma: float = Field(description="RMS of log(measured / calibrated) TPOT over the measurements")
    ttft_residual_sigma: float = Field(description="RMS of log(measured / calibrated) TTFT over the measurements")
    tpot_interval_sigma: float = Field(description="log spread behind the calibrated TPOT's P10-P90")
    ttft_interval_sigma: float = Field(description="log spread behind the calibrated TTFT's P10-P90")
    consistent: bool = True
    message: str = ""
    prior: CalibrationPrior = Field(default_factory=CalibrationPrior)


# ---- the predictor's terms ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """The cold prediction of each point split into the terms a calibration scales (ms, learned factor included).

    Sums: tpot = weights + batch + comm + interference + pipeline; ttft (before the slot wait) = prefill + step +
    contention * others_prefill (contention is the runtime's constant, already inside `queue`).
    """

    weights: np.ndarray
    batch: np.ndarray
    comm: np.ndarray
    interference: np.ndarray
    pipeline: np.ndarray
    prefill: np.ndarray
    step: np.ndarray
    queue: np.ndarray  # the cold model's contention term
    others_prefill: np.ndarray  # the other running requests' prefills (what queue_share multiplies)
    contention: np.ndarray
    kv_excess: np.ndarray  # admitted / running - 1: > 0 when the KV cache cannot hold every admitted sequence
    admission_ratio: np.ndarray
    osl: np.ndarray
    backends: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.weights)

    def take(self, idx) -> "Terms":
        idx = np.asarray(idx, dtype=int)
        values = {
            name: getattr(self, name)[idx]
            for name in self.__dataclass_fields__
            if name != "backends"
        }
        return Terms(**values, backends=tuple(self.backends[i] for i in idx))

    def cold_tpot(self) -> np.ndarray:
        return self.weights + self.batch + self.comm + self.interference + self.pipeline

    def cold_ttft_base(self) -> np.ndarray:
        return self.prefill + self.step + self.queue


def decompose(fitted: FittedPredictor, points: list[ServingPoint], phys: list[Physics] | None = None) -> Terms:
    """Split `fitted`'s prediction for each point into calibration terms (see `Terms`)."""
    return decompose_with_roofs(fitted, points, phys)[0]


def decompose_with_roofs(
    fitted: FittedPredictor, points: list[ServingPoint], phys: list[Physics] | None = None
) -> tuple[Terms, list]:
    """`decompose` plus each point's roofline (one physics pass for both)."""
    phys = phys if phys is not None else [physics(p) for p in points]
    roofs, ttft_factor, tpot_factor = fitted.corrections(points, phys)
    rows = []
    for point, ph, ft, fd in zip(points, phys, ttft_factor, tpot_factor):
        cal = fitted.calibrations.for_backend(point.backend)
        base = max(ph.decode_step_s - ph.comm_s, 0.0)
        weight_s = ph.decode_weight_read_bytes / (point.gpu.hbm_bandwidth * profile_for(point.gpu).memory_efficiency)
        weight_s = min(weight_s, base)
        decode = ph.pp * cal.decode_scale
        stage_s = cal.decode_scale * ph.decode_step_s + cal.interference * (ph.stage_s - ph.decode_step_s)
        others = max(ph.running_per_rank - 1.0, 0.0) * ph.prefill_alone_s
        rows.append(
            (
                fd * decode * weight_s,
                fd * decode * (base - weight_s),
                fd * decode * ph.comm_s,
                fd * ph.pp * cal.interference * (ph.stage_s - ph.decode_step_s),
                fd * ph.pp_latency_s,
                ft * (ph.chunks * ph.pp * cal.prefill_scale * ph.chunk_s + ph.pp_latency_s),
                ft * 0.5 * stage_s,
                ft * cal.contention * others,
                ft * others,
                cal.contention,
                max(ph.kv_queue_ratio - 1.0, 0.0),
                ph.admission_ratio,
                ph.osl,
            )
        )
    table = np.asarray(rows, dtype=float).reshape(len(points), 13)
    ms = table[:, :9] * 1000.0
    terms = Terms(
        *[ms[:, j] for j in range(9)],
        contention=table[:, 9],
        kv_excess=table[:, 10],
        admission_ratio=table[:, 11],
        osl=table[:, 12],
        backends=tuple(p.backend for p in points),
    )
    return terms, roofs


def check_applies(calibration: "Calibration", point: ServingPoint) -> None:
    """InvalidRequest unless `calibration` was fitted for the point's GPU type, runtime and precision."""
    group = calibration.group
    if (point.gpu.name, point.backend, point.precision) != (group.gpu, group.runtime, group.precision):
        raise InvalidRequest(
            "calibration",
            f"calibrated for {group.label()}, not for {point.gpu.name} / {point.backend} / {point.precision}",
        )


def _tpot(terms: Terms, c: TpotCoefficients) -> np.ndarray:
    return (
        c.weights_scale * terms.weights
        + c.batch_scale * terms.batch
        + c.comm_scale * terms.comm
        + c.interference_scale * terms.interference
        + terms.pipeline
        + c.step_overhead_ms
    )


def _ttft_base(terms: Terms, c: TtftCoefficients) -> np.ndarray:
    return (
        c.prefill_scale * terms.prefill
        + c.step_scale * terms.step
        + terms.queue
        + c.queue_share * terms.others_prefill
        + c.request_overhead_ms
    )


def apply(terms: Terms, calibration: "Calibration | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """(ttft_ms, tpot_ms) of every point, the slot wait included; cold when `calibration` is None."""
    tpot_c = calibration.tpot if calibration else TpotCoefficients()
    ttft_c = calibration.ttft if calibration else TtftCoefficients()
    tpot = _tpot(terms, tpot_c)
    return _ttft(terms, ttft_c, tpot), tpot


def _ttft(terms: Terms, c: TtftCoefficients, tpot: np.ndarray) -> np.ndarray:
    """TTFT: the base, the share of the KV-room wait, then the wait for a scheduler slot."""
    base = _ttft_base(terms, c)
    cycle = base + np.maximum(terms.osl - 1, 0) * tpot
    base = base + c.kv_wait_share * terms.kv_excess * cycle
    wait = np.array(
        [admission_wait_ms(r, a, b, int(o)) for r, a, b, o in zip(terms.admission_ratio, base, tpot, terms.osl)]
    )
    return base + wait


# ---- fitting -------------------------------------------------------------------------------------------------


_INTERIOR = 1e-3


def _fit_tpot(terms: Terms, measured: np.ndarray) -> TpotCoefficients:
    reference = float(np.median(terms.cold_tpot()))
    sigma = MEASUREMENT_SIGMA["tpot"]

    def coefficients(x: np.ndarray) -> TpotCoefficients:
        g, w, b, c, i, o = x
        return TpotCoefficients(
            weights_scale=math.exp(g + w),
            batch_scale=math.exp(g + b),
            comm_scale=math.exp(g + c),
            interference_scale=math.exp(g + i),
            step_overhead_ms=max(o, 0.0) * reference,
        )

    def residuals(x: np.ndarray) -> np.ndarray:
        predicted = _tpot(terms, coefficients(x))
        data = np.log(np.maximum(predicted, 1e-9) / measured) / sigma
        prior = np.array([x[0] / PRIOR_LEVEL["tpot"], *(x[1:5] / PRIOR_TERM), x[5] / PRIOR_OVERHEAD])
        return np.concatenate([data, prior])

    lower = [-np.inf] * 5 + [0.0]
    # start inside the bounds: from a point on a bound the trust-region method can stall at once
    x0 = np.array([0.0] * 5 + [_INTERIOR])
    x = least_squares(residuals, x0, bounds=(lower, [np.inf] * 6), method="trf").x
    return coefficients(x)


def _fit_ttft(terms: Terms, measured: np.ndarray, tpot: TpotCoefficients) -> TtftCoefficients:
    reference = float(np.median(terms.cold_ttft_base()))
    others_reference = max(float(np.median(terms.others_prefill)), 1e-9)
    sigma = MEASUREMENT_SIGMA["ttft"]
    calibrated_tpot = _tpot(terms, tpot)
    min_queue = -float(np.min(terms.contention)) if len(terms) else 0.0

    def coefficients(x: np.ndarray) -> TtftCoefficients:
        h, p, s, q, u, k = x
        return TtftCoefficients(
            prefill_scale=math.exp(h + p),
            step_scale=math.exp(h + s),
            queue_share=q,
            request_overhead_ms=u * reference,
            kv_wait_share=k,
        )

    def residuals(x: np.ndarray) -> np.ndarray:
        predicted = _ttft(terms, coefficients(x), calibrated_tpot)
        data = np.log(np.maximum(predicted, 1e-9) / measured) / sigma
        # the queue share's prior is on its effect relative to the group's TTFT, so it is unit-free
        queue_effect = x[3] * others_reference / max(reference, 1e-9)
        prior = np.array(
            [x[0] / PRIOR_LEVEL["ttft"], x[1] / PRIOR_TERM, x[2] / PRIOR_TERM, queue_effect / PRIOR_QUEUE,
             x[4] / PRIOR_OVERHEAD, x[5] / PRIOR_KV_WAIT]
        )
        return np.concatenate([data, prior])

    lower = [-np.inf, -np.inf, -np.inf, min_queue, 0.0, 0.0]
    x0 = np.array([0.0, 0.0, 0.0, max(0.0, min_queue) + _INTERIOR, _INTERIOR, _INTERIOR])
    x = least_squares(residuals, x0, bounds=(lower, [np.inf] * 6), method="trf").x
    return coefficients(x)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else 0.0


def fit_calibration(
    group: CalibrationGroup,
    keys: list[str],
    terms: Terms,
    ttft_ms: np.ndarray,
    tpot_ms: np.ndarray,
    cold: "ColdIntervals | None" = None,
) -> Calibration:
    """The calibration of `group` from its measurements' terms and measured values (what `calibrate` runs).

    `cold` is the uncalibrated model's interval table (default: the committed artifact)."""
    cold = cold or cold_intervals()
    n = len(keys)
    if n == 0:
        raise InvalidRequest("measurements", f"no measurements of {group.label()} to calibrate on")
    ttft_ms, tpot_ms = np.asarray(ttft_ms, dtype=float), np.asarray(tpot_ms, dtype=float)
    if not (np.all(np.isfinite(ttft_ms)) and np.all(ttft_ms > 0) and np.all(np.isfinite(tpot_ms)) and np.all(tpot_ms > 0)):
        raise InvalidRequest("measurements", "measured TTFT and TPOT must be positive numbers")
    tpot_c = _fit_tpot(terms, tpot_ms)
    ttft_c = _fit_ttft(terms, ttft_ms, tpot_c)
    draft = Calibration(
        group=group, measurements=list(keys), n=n, tpot=tpot_c, ttft=ttft_c,
        tpot_residual_sigma=0.0, ttft_residual_sigma=0.0, tpot_interval_sigma=0.0, ttft_interval_sigma=0.0,
    )
    ttft, tpot = apply(terms, draft)
    spread = {"tpot": _rms(np.log(tpot_ms / tpot)), "ttft": _rms(np.log(ttft_ms / ttft))}
    within = cold.within_sigma(group.runtime)
    problems = [
        f"{target.upper()} measurements are {math.exp(spread[target]) - 1:.0%} (RMS) from the best calibrated fit, "
        f"more than the {math.exp(RESIDUAL_BOUND[target]) - 1:.0%} the correction can explain"
        for target in ("tpot", "ttft")
        if spread[target] > RESIDUAL_BOUND[target]
    ]
    sigmas = {}
    for target in ("tpot", "ttft"):
        if problems:
            sigmas[target] = max(spread[target], cold.sigma(group.runtime, target))
        else:
            pooled = (SPREAD_PRIOR_COUNT * within[target] ** 2 + n * spread[target] ** 2) / (SPREAD_PRIOR_COUNT + n)
            # the level is known from the n measurements and the prior; never less certain than the cold model
            level = 1.0 + 1.0 / (n + SPREAD_PRIOR_COUNT)
            sigmas[target] = min(math.sqrt(pooled * level), cold.sigma(group.runtime, target))
    message = (
        "; ".join(problems) + ": the measurements disagree with each other or with the model's shape "
        "(another software version, a different benchmark, a misrecorded config?); predictions keep the fit but "
        "their intervals carry the whole spread"
        if problems
        else f"calibrated on {n} measurement(s)"
    )
    return draft.model_copy(
        update={
            "tpot_residual_sigma": spread["tpot"],
            "ttft_residual_sigma": spread["ttft"],
            "tpot_interval_sigma": sigmas["tpot"],
            "ttft_interval_sigma": sigmas["ttft"],
            "consistent": not problems,
            "message": message,
        }
    )


def calibrate(group: CalibrationGroup, rows: list[Measurement], predictor=None) -> Calibration:
    """Fit `group`'s correction on its measured rows (deterministic: the same rows give the same coefficients).

    Every row must belong to `group` (same model, GPU type, runtime and precision); `predictor` is a
    `budsim.predictor.Predictor` (default: the shipped one).
    """
    if not rows:
        raise InvalidRequest("measurements", f"no measurements of {group.label()} to calibrate on")
    for number, row in enumerate(rows):
        if group_of(row.point, group.model) != group or row.point.model != rows[0].point.model:
            other = "another model" if row.point.model != rows[0].point.model else group_of(row.point, group.model).label()
            raise InvalidRequest(f"measurements[{number}]", f"belongs to {other}, not {group.label()}")
    if predictor is None:
        from budsim.predictor import default_predictor

        predictor = default_predictor()
    terms = decompose(predictor.fitted, [r.point for r in rows])
    return fit_calibration(
        group,
        [r.key() for r in rows],
        terms,
        np.array([r.ttft_ms for r in rows]),
        np.array([r.tpot_ms for r in rows]),
    )


# ---- intervals -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdIntervals:
    """Leave-group-out log(measured / predicted) quantiles and within-group spreads, per runtime and overall."""

    by_runtime: dict[str, dict[str, float]]

    def _entry(self, runtime: str) -> dict[str, float]:
        return self.by_runtime.get(runtime) or self.by_runtime["all"]

    def quantiles(self, runtime: str, target: str) -> tuple[float, float]:
        entry = self._entry(runtime)
        return entry[f"{target}_p10"], entry[f"{target}_p90"]

    def sigma(self, runtime: str, target: str) -> float:
        low, high = self.quantiles(runtime, target)
        return (high - low) / (2 * Z90)

    def within_sigma(self, runtime: str) -> dict[str, float]:
        entry = self._entry(runtime)
        return {"tpot": entry["tpot_within_sigma"], "ttft": entry["ttft_within_sigma"]}


# Used only when the artifact is missing (a checkout before the first evaluation): wide, symmetric bounds.
_FALLBACK = {
    "all": {
        "tpot_p10": -0.4, "tpot_p90": 0.4, "ttft_p10": -0.7, "ttft_p90": 0.7,
        "tpot_within_sigma": 0.15, "ttft_within_sigma": 0.3, "rows": 0,
    }
}


@lru_cache(maxsize=1)
def cold_intervals(path: Path = INTERVALS_ARTIFACT) -> ColdIntervals:
    if not path.exists():
        return ColdIntervals(_FALLBACK)
    return ColdIntervals(json.loads(path.read_text())["by_runtime"])


def interval_table(backends: list[str], log_ratio_ttft: np.ndarray, log_ratio_tpot: np.ndarray,
                   groups: list) -> dict[str, dict[str, float]]:
    """The artifact's content from leave-group-out log(measured / predicted): per runtime (and 'all') the P10/P90
    and the spread left once each group's own mean log error is removed."""
    backends_arr = np.asarray(backends)
    table: dict[str, dict[str, float]] = {}
    for runtime in ["all", *sorted(set(backends))]:
        idx = np.arange(len(backends)) if runtime == "all" else np.flatnonzero(backends_arr == runtime)
        entry: dict[str, float] = {"rows": int(len(idx))}
        for target, values in (("tpot", log_ratio_tpot), ("ttft", log_ratio_ttft)):
            v = values[idx]
            entry[f"{target}_p10"], entry[f"{target}_p90"] = (float(q) for q in np.quantile(v, [0.1, 0.9]))
            centred = v.copy()
            members = [groups[i] for i in idx]
            for g in set(members):
                mask = np.array([m == g for m in members])
                centred[mask] -= np.mean(v[mask])
            low, high = np.quantile(centred, [0.1, 0.9])
            entry[f"{target}_within_sigma"] = float((high - low) / (2 * Z90))  # robust: a few 30 s TTFTs
        table[runtime] = entry
    return table


def intervals(
    backends: tuple[str, ...],
    ttft: np.ndarray,
    tpot: np.ndarray,
    calibration: Calibration | None = None,
    cold: "ColdIntervals | None" = None,
) -> dict[str, np.ndarray]:
    """P10/P90 of TTFT and TPOT for predictions (ms) on `backends`: cold quantiles, or the calibration's spread."""
    table = cold or cold_intervals()
    out: dict[str, np.ndarray] = {}
    for target, values in (("ttft", np.asarray(ttft)), ("tpot", np.asarray(tpot))):
        if calibration is None:
            q = np.array([table.quantiles(b, target) for b in backends]).reshape(len(values), 2)
            low, high = q[:, 0], q[:, 1]
        else:
            sigma = getattr(calibration, f"{target}_interval_sigma")
            low, high = np.full(len(values), -Z90 * sigma), np.full(len(values), Z90 * sigma)
        out[f"{target}_p10"] = values * np.exp(low)
        out[f"{target}_p90"] = values * np.exp(high)
    return out
