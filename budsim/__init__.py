"""budsim: performance model and optimizer for LLM serving deployments.

Public API (imported lazily, so `import budsim.errors` stays cheap for the API layer):

* `budsim.catalog`: `get_gpu(name) -> GpuSpec`, `get_model(hf_id) -> ModelArchitecture`, `architecture_from_config`
* `budsim.predictor.predict(model, gpu, ServingConfig, Workload) -> Prediction`
* `budsim.constraints.check_config(model, gpu, ServingConfig, free_gpus) -> list[str]`
* `budsim.search`: `optimize(OptimizationRequest) -> OptimizationResult`, and the resumable
  `start_search` / `advance_search` / `finish_search` over a JSON-serialisable `SearchState`
* `budsim.errors.InvalidRequest(field, message)` for input the caller must fix

Training and evaluation: `python -m budsim.train`, `python -m budsim.evaluate`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "get_gpu": "budsim.catalog",
    "get_model": "budsim.catalog",
    "architecture_from_config": "budsim.catalog",
    "GpuSpec": "budsim.catalog",
    "predict": "budsim.predictor",
    "check_config": "budsim.constraints",
    "optimize": "budsim.search",
    "start_search": "budsim.search",
    "advance_search": "budsim.search",
    "finish_search": "budsim.search",
    "InvalidRequest": "budsim.errors",
    "ServingConfig": "budsim.schemas",
    "Workload": "budsim.schemas",
    "Prediction": "budsim.schemas",
    "Targets": "budsim.schemas",
    "Method": "budsim.schemas",
    "OptimizationRequest": "budsim.schemas",
    "OptimizationResult": "budsim.schemas",
    "SearchState": "budsim.schemas",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'budsim' has no attribute {name!r}")
