"""From an endpoint's configuration to what the optimizer checks and the simulated runtime needs.

The API's synchronous fit check, the optimizer and the deploy validation judge a config the same way (translated
by control/translate.py), and the API and Reoptimize build the optimizer's request with one builder.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from budsim.constraints import check_config
from budsim.errors import InvalidRequest
from budsim.predictor import predict
from budsim.schemas import Method, OptimizationRequest, ProductionCalibration, ServingConfig, Workload
from budsim.search import validate_request
from budsim.silicon_profile import profile_timing
from control import translate
from control.errors import Conflict, Invalid, invalid_field
from control.payloads.clusters import SimulatedSilicon
from control.payloads.deployments import (
    PerformanceTargets,
    RolloutPlan,
    RolloutStep,
    RuntimeConfig,
    SimulatedTiming,
    WorkloadSpec,
)
from control.payloads.models import ModelStatus
from control.store import endpoints
from control.store.clusters import ClusterRow
from control.store.models import ModelRow
from core.gpu_types import canonical_gpu_type
from core.model_facts import ModelArchitecture

PROBE_WORKLOAD = Workload(input_tokens=512, output_tokens=64, concurrency=1)


def fit_problems(facts: ModelArchitecture, gpu_type: str, config: ServingConfig, free_gpus: int) -> list[str]:
    """Every reason the config cannot run (memory, head divisibility, GPUs free, runtime support)."""
    return check_config(facts, gpu_type, config, free_gpus)


def simulated_timing(facts: ModelArchitecture, gpu_type: str, config: ServingConfig, load_delay_s: float,
                     simulation: SimulatedSilicon | None = None) -> SimulatedTiming:
    """How the simulated runtime times its tokens: like the measured silicon where a profile covers the model, GPU
    type and runtime; else the optimizer's single-request prediction times the cluster's distortion (none given: the
    prediction itself). Either way the predictor is not told: it learns the difference only from measurements."""
    profile = profile_timing(facts, gpu_type, config.runtime, config.tensor_parallel_size, config.max_num_seqs,
                             ref_prompt_tokens=PROBE_WORKLOAD.input_tokens)
    if profile is not None:
        return SimulatedTiming(ttft_ms=profile.ttft_ms, tpot_ms=profile.tpot_ms,
                               batch_tpot_factor=profile.batch_tpot_factor, load_delay_s=load_delay_s,
                               source=f"measured silicon profile: {profile.group}")
    prediction = predict(facts, gpu_type, config.model_copy(update={"replicas": 1}), PROBE_WORKLOAD)
    scales = simulation or SimulatedSilicon()
    return SimulatedTiming(
        ttft_ms=prediction.ttft_ms * scales.ttft_scale, tpot_ms=prediction.tpot_ms * scales.tpot_scale,
        batch_tpot_factor=SimulatedTiming.model_fields["batch_tpot_factor"].default * scales.batch_scale,
        load_delay_s=load_delay_s,
        source=("the uncalibrated prediction" if simulation is None else
                f"the uncalibrated prediction, TTFT x{scales.ttft_scale:g}, TPOT x{scales.tpot_scale:g}, "
                f"batch slow-down x{scales.batch_scale:g}"))


# ------------------------------------------------------------------------------------------ rolling updates
# The warm-up gate's TTFT bound when the endpoint's targets name none: generous, so only a replica that cannot serve
# (or serves far slower than any target would allow) is held back.
WARMUP_TTFT_MS_DEFAULT = 10_000.0


def surge_batch(replicas: int) -> int:
    """New replicas started at once when GPUs allow: a quarter of the target, at least one."""
    return max(1, -(-replicas // 4))


def plan_rollout(old_replicas: int, old_gpus: int, new_replicas: int, new_gpus: int, available_gpus: int,
                 new_running: int = 0) -> RolloutPlan:
    """The batches that take an endpoint from `old_replicas` (of `old_gpus` GPUs each) to `new_replicas` of the new
    generation (`new_gpus` each; `new_running` already up) within `available_gpus` (what the endpoint may hold: its
    own plus the free ones). A batch of new replicas starts on spare GPUs (a surge) and joins the route before as
    many old ones drain and stop; without a spare GPU for even one new replica, old replicas are stopped first, one
    batch at a time (maxSurge 0). Conflict when even that would leave no replica serving, or the new generation
    cannot fit at all. Running it with the roles swapped plans a rollback."""
    if new_gpus * new_replicas > available_gpus:
        raise Conflict(f"the new configuration needs {new_gpus * new_replicas} GPUs for {new_replicas} replicas; this "
                       f"endpoint can hold {available_gpus} (its own and the free ones)", "replicas")
    old, new, steps, first_surge = old_replicas, new_running, [], None
    while new < new_replicas or old > 0:
        free = available_gpus - old * old_gpus - new * new_gpus
        start = min(new_replicas - new, free // new_gpus, surge_batch(new_replicas))
        if first_surge is None:
            first_surge = max(0, start)
        if start > 0:
            new += start
            steps.append(RolloutStep(action="start", new_replicas=new, old_replicas=old))
            stop = old if new == new_replicas else min(old, start)
        else:
            stop = old if new == new_replicas else min(old, -(-(new_gpus - free) // old_gpus))
            if new + old - stop < 1:
                raise Conflict(f"no spare GPU to start a new replica beside the old one ({free} free, a new replica "
                               f"needs {new_gpus}), and replacing it in place would leave no replica serving: free "
                               f"{new_gpus - free} GPU(s) or scale the endpoint to 2 replicas first", "replicas")
        if stop > 0:
            old -= stop
            steps.append(RolloutStep(action="stop", new_replicas=new, old_replicas=old))
    if first_surge:
        summary = (f"surge: up to {first_surge} new replica(s) start on spare GPUs and pass the warm-up gate before "
                   f"as many old ones drain and stop; {len(steps)} steps")
    else:
        summary = ("replace in place (maxSurge 0): no spare GPU for a new replica beside the old ones, so one old "
                   "replica drains and stops before each new one starts; serving capacity is one replica lower "
                   f"during each step; {len(steps)} steps")
    return RolloutPlan(max_surge=first_surge or 0, summary=summary, steps=steps)


# ------------------------------------------------------------------------------------------ the optimizer's request
def available_facts(model: ModelRow) -> ModelArchitecture:
    """The scanned architecture of a model that may be optimized or deployed (only AVAILABLE ones)."""
    if model.status != ModelStatus.AVAILABLE or not model.facts:
        raise Conflict(f"model {model.name} is {model.status}: only AVAILABLE models can be optimized or deployed",
                       "model_id", status=str(model.status))
    try:
        return ModelArchitecture.model_validate(model.facts)
    except ValidationError as error:  # facts stored by an older registry that this version cannot read
        raise Conflict(f"model {model.name}'s stored facts are unreadable ({error.errors()[0]['msg']}); register it "
                       "again", "model_id") from None


def pick_gpu(cluster: ClusterRow, requested: str | None, field: str) -> tuple[str, dict]:
    """The cluster's GPU pool of the requested type (any spelling the catalog knows), else its first pool."""
    pools = {pool["gpu_type"]: pool for pool in cluster.gpus}
    if requested is None:
        gpu_type = next(iter(pools))
    else:
        try:
            gpu_type = canonical_gpu_type(requested)
        except ValueError as error:
            raise invalid_field(field, str(error)) from None
    if gpu_type not in pools:
        raise invalid_field(field, f"cluster {cluster.name} has no {gpu_type}; it has {', '.join(pools)}")
    return gpu_type, pools[gpu_type]


async def optimization_request(
    conn: asyncpg.Connection, *, model: ModelRow, cluster: ClusterRow, runtime: str, method: Method | str,
    targets: PerformanceTargets | Mapping | None, workload: WorkloadSpec, gpu_type: str | None = None,
    config: RuntimeConfig | None = None, replicas: int | None = None, endpoint_id: UUID | None = None,
    calibration: ProductionCalibration | None = None, gpu_field: str = "resources.gpu_type",
) -> OptimizationRequest:
    """The search (or, MANUAL, the check of `config`) for a model on a cluster's free GPUs of one type; the GPUs the
    endpoint itself holds count as free (its config is being replaced). A MANUAL config that cannot fit is Invalid
    with every reason."""
    facts = available_facts(model)
    gpu_type, pool = pick_gpu(cluster, gpu_type, gpu_field)
    free, _ = await endpoints.free_gpus(conn, cluster.id, gpu_type, excluding=endpoint_id)
    manual = None
    if Method(method) == Method.MANUAL:
        if config is None:
            raise invalid_field("config", "MANUAL optimization needs a config")
        manual = translate.serving_config(config, replicas or 1, runtime, model.context_length)
        problems = fit_problems(facts, gpu_type, manual, free)
        if problems:
            raise Invalid("config: does not fit: " + "; ".join(problems), "config", problems=problems)
    return OptimizationRequest(
        model=facts, gpu_type=gpu_type, available_gpus=free, runtime=runtime, method=Method(method),
        targets=translate.targets(targets), workload=translate.workload(workload), config=manual,
        max_model_len=config.max_model_len if config and config.max_model_len else None,
        price_per_hour=pool.get("price_per_hour"), calibration=calibration or ProductionCalibration(),
    )


def check_request(request: OptimizationRequest) -> None:
    """What the optimizer would refuse, refused before anything is stored: no free GPUs is a Conflict (they may
    free up), anything else Invalid naming the field."""
    try:
        validate_request(request)
    except InvalidRequest as error:
        if error.field == "available_gpus":
            raise Conflict(f"no free {request.gpu_type} GPUs on the cluster", "cluster_id") from None
        raise invalid_field(error.field, error.message) from None
