"""budsim: performance model and optimizer for LLM serving deployments.

* `budsim.catalog`: `get_gpu(name) -> GpuSpec`, `get_model(hf_id) -> ModelArchitecture` (from a config.json:
  `core.model_facts.architecture_from_config`)
* `budsim.predictor.predict(model, gpu, ServingConfig, Workload) -> Prediction`
* `budsim.constraints.check_config(model, gpu, ServingConfig, free_gpus) -> list[str]`
* `budsim.search`: `optimize(OptimizationRequest) -> OptimizationResult`, and the resumable
  `start_search` / `advance_search` / `finish_search` over a JSON-serialisable `SearchState`
* `budsim.errors.InvalidRequest(field, message)` for input the caller must fix

Fitting, training and evaluation: `python -m budsim.kernel_fit`, `python -m budsim.train`,
`python -m budsim.evaluate`.
"""
