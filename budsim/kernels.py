"""Per-GPU kernel profiles, read by the roofline: how close real kernels get to each GPU's data-sheet peaks.

The profiles are fitted offline by `python -m budsim.kernel_fit` (see that module for the formulas and the
independent checks) and committed as budsim/artifacts/kernels.json; this module only reads them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "kernels.json"


@dataclass(frozen=True)
class AllReduceCurve:
    """Measured all-reduce time over message size for one GPU count (the faster of custom all-reduce and NCCL),
    interpolated log-log between points and extended beyond the largest at its bus bandwidth."""

    sizes: list[float]  # bytes, ascending
    seconds: list[float]

    def at(self, message_bytes: float) -> float:
        sizes, seconds = self.sizes, self.seconds
        if message_bytes <= sizes[0]:
            return seconds[0]
        if message_bytes >= sizes[-1]:
            return seconds[-1] * message_bytes / sizes[-1]
        return float(np.exp(np.interp(math.log(message_bytes), np.log(sizes), np.log(seconds))))

    @property
    def latency_s(self) -> float:
        return self.seconds[0]

    def bus_bandwidth(self, gpus: int) -> float:
        return 2.0 * (gpus - 1) / gpus * self.sizes[-1] / self.seconds[-1]


@dataclass(frozen=True)
class KernelProfile:
    """How close one GPU's kernels get to its data-sheet peaks (fractions), plus fixed per-kernel floors."""

    memory_efficiency: float = 0.8
    gemm_efficiency: dict[str, float] = field(default_factory=lambda: {"bf16": 0.6, "fp8": 0.6})
    gemm_floor_s: float = 6e-6
    decode_attention_efficiency: float = 0.7
    prefill_attention_efficiency: float = 0.5
    attention_floor_s: float = 8e-6
    allreduce: dict[int, AllReduceCurve] = field(default_factory=dict)
    # GPUs without tables: a latency and a bus bandwidth scaled from the spec instead of curves
    allreduce_latency_s: float = 8e-6
    allreduce_bus_share: float = 0.7
    measured: bool = False

    def gemm(self, precision: str) -> float:
        if precision in ("fp8", "fp4") and "fp8" in self.gemm_efficiency:
            return self.gemm_efficiency["fp8"]
        return self.gemm_efficiency.get("bf16", 0.6)

    def allreduce_s(self, gpus: int, message_bytes: float, interconnect_bandwidth: float) -> float:
        """One all-reduce of `message_bytes` over `gpus` ranks: the nearest measured curve (latency grown
        log-wise for more ranks), or latency + ring traffic at the spec's bandwidth when nothing was measured."""
        if gpus <= 1:
            return 0.0
        if self.allreduce:
            size = min(self.allreduce, key=lambda n: abs(math.log2(n) - math.log2(gpus)))
            return self.allreduce[size].at(message_bytes) * (1 + max(0.0, math.log2(gpus / size)) / 3)
        ring = 2.0 * (gpus - 1) / gpus * message_bytes / (interconnect_bandwidth * self.allreduce_bus_share)
        return self.allreduce_latency_s * (1 + math.log2(gpus) / 3) + ring


# ---- the artifact -------------------------------------------------------------------------------------------


def _profile_from_json(document: dict) -> KernelProfile:
    allreduce = {int(n): AllReduceCurve(**curve) for n, curve in document.get("allreduce", {}).items()}
    return KernelProfile(**{**document, "allreduce": allreduce})


@lru_cache(maxsize=1)
def load_profiles() -> tuple[dict[str, KernelProfile], KernelProfile]:
    if not ARTIFACT.exists():
        return {}, KernelProfile()
    document = json.loads(ARTIFACT.read_text())
    profiles = {name: _profile_from_json(p) for name, p in document["gpus"].items()}
    return profiles, _profile_from_json(document["default"])


def profiles_hash() -> str:
    """sha256 of the committed profiles, recorded by the predictor it was trained with."""
    return "sha256:" + hashlib.sha256(ARTIFACT.read_bytes()).hexdigest() if ARTIFACT.exists() else "none"


def profile_for(gpu) -> KernelProfile:
    """The fitted profile of `gpu` (a catalog GpuSpec), or the default for GPUs without kernel tables."""
    profiles, default = load_profiles()
    return profiles.get(gpu.name, default)
