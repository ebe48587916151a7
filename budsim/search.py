"""Find a serving config: NSGA-II (pymoo) over the predictor, a direct search, or a check of the caller's config.

The NSGA-II form is resumable so a Temporal workflow can run whole generations per activity:
``start_search`` -> ``advance_search`` (any number of times) -> ``finish_search``. The state is plain JSON
(the population's genes, the random generator's words, the archive of every evaluated config), and every
generation restarts from that state, so advancing 3 + 7 generations equals advancing 10, and ``optimize`` is
literally those three calls.

Objectives: maximise capacity (output tokens/s with every slot busy), minimise end-to-end latency under the
workload and $/hour. (Throughput *at* the workload's concurrency is concurrency x output / latency, so it adds
nothing beside latency; capacity is what more replicas or slots buy.) The user's targets and the
memory/GPU-count rules are constraints. The first population holds the direct-search configs; after the last
generation a local polish tries every one-step neighbour of the front. The reported Pareto set is taken over
every config evaluated: among those meeting every target when some do, else among all that can run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.evaluator import Evaluator
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.problems.static import StaticProblem
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from budsim.catalog import GpuSpec, get_gpu
from budsim.constraints import resource_problems, runtime_supports, structural_problems
from budsim.errors import InvalidRequest
from budsim.predictor import predict_many
from budsim.roofline import normalize_backend
from budsim.schemas import (
    RUNTIMES,
    TARGET_MAX,
    TARGET_MIN,
    Candidate,
    Method,
    OptimizationRequest,
    OptimizationResult,
    Prediction,
    Recommendation,
    RejectedConfig,
    SearchState,
    ServingConfig,
    TargetMiss,
)

MAX_NUM_SEQS_CHOICES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
BATCHED_TOKENS_CHOICES = [1024, 2048, 4096, 8192, 16384]
PP_CANDIDATES = [1, 2, 3, 4, 6, 8]
MAX_REJECTED_REPORTED = 50
MATING_RETRIES = 5
POLISH_ROUNDS = 10
REPLICAS_GENE = 4  # position of the replica count in a genome (see SearchSpace.encode)
MAX_PARETO_REPORTED = 200
_INFEASIBLE_OBJECTIVES = (0.0, 1e12, 1e12)


# ----------------------------------------------------------------------------------------------- validation


def validate_request(request: OptimizationRequest) -> GpuSpec:
    """Raise InvalidRequest for input the caller must fix; return the GPU spec."""
    gpu = get_gpu(request.gpu_type)
    if request.available_gpus < 1:
        raise InvalidRequest("available_gpus", "must be at least 1")
    if request.runtime not in RUNTIMES:
        raise InvalidRequest("runtime", f"unknown runtime {request.runtime!r}; use one of {', '.join(RUNTIMES)}")
    if not runtime_supports(request.runtime, request.model.model_type):
        raise InvalidRequest("runtime", f"{request.runtime} does not implement model_type {request.model.model_type!r}")
    for name, value in request.targets.model_dump(exclude={"confidence"}).items():
        if value is not None and not (TARGET_MIN <= value <= TARGET_MAX):
            raise InvalidRequest(f"targets.{name}", f"must be between {TARGET_MIN:g} and {TARGET_MAX:g}, got {value}")
    if request.price_per_hour is not None and not request.price_per_hour >= 0:
        raise InvalidRequest("price_per_hour", "must not be negative")
    context = request.workload.input_tokens + request.workload.output_tokens
    if context > request.model.max_position_embeddings:
        raise InvalidRequest(
            "workload",
            f"input + output tokens ({context}) exceed the model's {request.model.max_position_embeddings} positions",
        )
    if request.max_model_len is not None and request.max_model_len < context:
        raise InvalidRequest(
            "max_model_len", f"{request.max_model_len} is shorter than input + output tokens ({context})"
        )
    calibration = request.group_calibration
    if calibration is not None:
        group = calibration.group
        wanted = (gpu.name, normalize_backend(request.runtime), request.model.precision.name)
        if wanted != (group.gpu, group.runtime, group.precision):
            raise InvalidRequest(
                "group_calibration",
                f"calibrated for {group.label()}, not for {' / '.join(wanted)}",
            )
    if request.method == Method.MANUAL:
        if request.config is None:
            raise InvalidRequest("config", "MANUAL optimization needs a config to check")
        config = request.config.model_copy(update={"runtime": request.runtime})
        problems = structural_problems(request.model, gpu, config)
        if problems:
            raise InvalidRequest("config", "; ".join(problems))
    return gpu


def default_max_model_len(request: OptimizationRequest) -> int:
    """The context to provision: the caller's, else the workload's prompt + answer rounded up to 1024."""
    if request.max_model_len is not None:
        return request.max_model_len
    context = request.workload.input_tokens + request.workload.output_tokens
    return min(request.model.max_position_embeddings, 1024 * math.ceil(context / 1024))


# ----------------------------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class SearchSpace:
    """Choice lists per knob; a gene vector holds indices into them (and the replica count)."""

    tp: list[int]
    pp: list[int]
    max_num_seqs: list[int]
    max_num_batched_tokens: list[int]
    max_replicas: int
    max_model_len: int
    gpu_memory_utilization: float
    runtime: str

    @property
    def lower(self) -> np.ndarray:
        return np.array([0, 0, 0, 0, 1])

    @property
    def upper(self) -> np.ndarray:
        return np.array(
            [
                len(self.tp) - 1,
                len(self.pp) - 1,
                len(self.max_num_seqs) - 1,
                len(self.max_num_batched_tokens) - 1,
                self.max_replicas,
            ]
        )

    def decode(self, genes: list[int]) -> ServingConfig:
        """Gene vector -> config; replicas are clipped to what the free GPUs allow (at least 1)."""
        tp, pp = self.tp[genes[0]], self.pp[genes[1]]
        replicas = max(1, min(int(genes[4]), self.max_replicas // (tp * pp)))
        return ServingConfig(
            tensor_parallel_size=tp,
            pipeline_parallel_size=pp,
            max_num_seqs=self.max_num_seqs[genes[2]],
            max_num_batched_tokens=self.max_num_batched_tokens[genes[3]],
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
            replicas=replicas,
            runtime=self.runtime,
        )

    def encode(self, config: ServingConfig) -> list[int]:
        return [
            self.tp.index(config.tensor_parallel_size),
            self.pp.index(config.pipeline_parallel_size),
            self.max_num_seqs.index(config.max_num_seqs),
            self.max_num_batched_tokens.index(config.max_num_batched_tokens),
            config.replicas,
        ]

    def size(self) -> int:
        return (
            len(self.tp) * len(self.pp) * len(self.max_num_seqs) * len(self.max_num_batched_tokens) * self.max_replicas
        )

    def all_genes(self) -> list[list[int]]:
        return [
            [a, b, c, d, r]
            for a in range(len(self.tp))
            for b in range(len(self.pp))
            for c in range(len(self.max_num_seqs))
            for d in range(len(self.max_num_batched_tokens))
            for r in range(1, self.max_replicas + 1)
        ]


def build_space(request: OptimizationRequest, gpu: GpuSpec) -> SearchSpace:
    model, available = request.model, request.available_gpus
    probe = ServingConfig(
        runtime=request.runtime,
        max_model_len=default_max_model_len(request),
        max_num_seqs=1,
        max_num_batched_tokens=BATCHED_TOKENS_CHOICES[0],
    )
    tps = [
        t
        for t in range(1, min(gpu.gpus_per_node, available) + 1)
        if not structural_problems(model, gpu, probe.model_copy(update={"tensor_parallel_size": t}))
    ]
    pps = [
        p
        for p in PP_CANDIDATES
        if p <= available
        and not structural_problems(model, gpu, probe.model_copy(update={"pipeline_parallel_size": p}))
    ]
    if not tps or not pps:
        raise InvalidRequest("model", "no tensor/pipeline split of this model is valid on this GPU type")
    return SearchSpace(
        tps,
        pps,
        MAX_NUM_SEQS_CHOICES,
        BATCHED_TOKENS_CHOICES,
        available,
        default_max_model_len(request),
        request.gpu_memory_utilization,
        request.runtime,
    )


# ----------------------------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    config: ServingConfig
    problems: list[str]
    prediction: Prediction | None
    misses: list[TargetMiss]

    @property
    def runnable(self) -> bool:
        return not self.problems

    @property
    def meets_targets(self) -> bool:
        return self.runnable and not self.misses

    def objectives(self) -> tuple[float, float, float]:
        if self.prediction is None:
            return _INFEASIBLE_OBJECTIVES
        p = self.prediction
        return (-p.max_throughput_tps, p.e2e_latency_ms, p.cost_per_hour)


def _config_key(config: ServingConfig) -> tuple:
    return (
        config.tensor_parallel_size,
        config.pipeline_parallel_size,
        config.max_num_seqs,
        config.max_num_batched_tokens,
        config.replicas,
    )


def judged_values(request: OptimizationRequest, prediction: Prediction) -> tuple[float, float, float]:
    """(TTFT, end-to-end latency, throughput) the targets are judged on: the predicted values, or with
    `confidence: high` the interval's pessimistic side (P90 TTFT and latency, and the throughput that latency
    gives the workload's clients)."""
    if request.targets.confidence != "high" or prediction.e2e_latency_p90_ms is None:
        return prediction.ttft_ms, prediction.e2e_latency_ms, prediction.output_throughput_tps
    latency = prediction.e2e_latency_p90_ms
    workload = request.workload
    return prediction.ttft_p90_ms, latency, workload.concurrency * workload.output_tokens / (latency / 1000.0)


def target_misses(request: OptimizationRequest, prediction: Prediction) -> list[TargetMiss]:
    targets, misses = request.targets, []
    basis = "p90" if targets.confidence == "high" else "expected"
    ttft, latency, throughput = judged_values(request, prediction)

    def over(name: str, limit: float | None, value: float, judged: str = basis) -> None:
        if limit is not None and value > limit:
            misses.append(
                TargetMiss(
                    target=name, limit=limit, predicted=value, shortfall_pct=(value - limit) / limit * 100,
                    basis=judged,
                )
            )

    over("max_latency_ms", targets.max_latency_ms, latency)
    over("max_ttft_ms", targets.max_ttft_ms, ttft)
    over("max_cost_per_hour", targets.max_cost_per_hour, prediction.cost_per_hour, "expected")  # cost is exact
    if targets.min_throughput_tps is not None and throughput < targets.min_throughput_tps:
        limit = targets.min_throughput_tps
        misses.append(
            TargetMiss(
                target="min_throughput_tps",
                limit=limit,
                predicted=throughput,
                shortfall_pct=(limit - throughput) / limit * 100,
                basis=basis,
            )
        )
    return misses


def prediction_calibration(request: OptimizationRequest):
    """What corrects the request's predictions: its group calibration, else its plain (TTFT, TPOT) scales."""
    if request.group_calibration is not None:
        return request.group_calibration
    return (request.calibration.ttft_scale, request.calibration.tpot_scale)


class ConfigEvaluator:
    """Checks and predicts configs, once each (results cached by config)."""

    def __init__(self, request: OptimizationRequest, gpu: GpuSpec) -> None:
        self.request, self.gpu = request, gpu
        self.cache: dict[tuple, Evaluation] = {}

    def evaluate(self, configs: list[ServingConfig]) -> list[Evaluation]:
        fresh = {}
        for config in configs:
            key = _config_key(config)
            if key not in self.cache and key not in fresh:
                fresh[key] = config
        runnable = []
        for key, config in fresh.items():
            problems = structural_problems(self.request.model, self.gpu, config) + resource_problems(
                self.request.model, self.gpu, config, self.request.available_gpus
            )
            self.cache[key] = Evaluation(config, problems, None, [])
            if not problems:
                runnable.append(config)
        if runnable:
            predictions = predict_many(
                self.request.model, self.gpu, runnable, self.request.workload, self.request.price_per_hour,
                calibration=prediction_calibration(self.request),
            )
            for config, prediction in zip(runnable, predictions):
                evaluation = self.cache[_config_key(config)]
                evaluation.prediction = prediction
                evaluation.misses = target_misses(self.request, prediction)
        return [self.cache[_config_key(c)] for c in configs]


_TARGET_ORDER = ("max_latency_ms", "max_ttft_ms", "min_throughput_tps", "max_cost_per_hour")


def _constraint_row(evaluation: Evaluation) -> list[float]:
    """pymoo inequality constraints (<= 0 is satisfied): 'can run' first, then one per target (relative miss)."""
    if not evaluation.runnable:
        return [1.0 + len(evaluation.problems)] + [1e6] * len(_TARGET_ORDER)
    by_name = {m.target: m.shortfall_pct / 100 for m in evaluation.misses}
    return [-1.0] + [by_name.get(name, -1.0) for name in _TARGET_ORDER]


# ----------------------------------------------------------------------------------------------- NSGA-II


class _SearchProblem(Problem):
    def __init__(self, space: SearchSpace) -> None:
        super().__init__(
            n_var=5, n_obj=3, n_ieq_constr=1 + len(_TARGET_ORDER), xl=space.lower, xu=space.upper, vtype=int
        )


def _new_algorithm(
    request: OptimizationRequest, space: SearchSpace, first: np.ndarray | None = None
) -> tuple[NSGA2, _SearchProblem]:
    problem = _SearchProblem(space)
    algorithm = NSGA2(
        pop_size=request.population_size,
        sampling=first if first is not None else IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    # The space is small and discrete: give up on a generation's duplicate offspring quickly instead of
    # retrying 100 times (pymoo's default), which would dominate the run time.
    algorithm.mating.n_max_iterations = MATING_RETRIES
    algorithm.setup(problem, seed=request.seed, termination=("n_gen", 10**9))
    return algorithm, problem


def _evaluate_population(pop: Population, problem: Problem, space: SearchSpace, evaluator: ConfigEvaluator) -> None:
    genes = [[int(v) for v in row] for row in pop.get("X")]
    evaluations = evaluator.evaluate([space.decode(g) for g in genes])
    F = np.array([e.objectives() for e in evaluations], dtype=float)
    G = np.array([_constraint_row(e) for e in evaluations], dtype=float)
    Evaluator().eval(StaticProblem(problem, F=F, G=G), pop)


def _save_rng(algorithm: NSGA2) -> list[int]:
    state = algorithm.random_state.bit_generator.state
    return [int(state["state"]["state"]), int(state["state"]["inc"]), int(state["has_uint32"]), int(state["uinteger"])]


def _load_rng(algorithm: NSGA2, words: list[int]) -> None:
    algorithm.random_state.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": words[0], "inc": words[1]},
        "has_uint32": words[2],
        "uinteger": words[3],
    }


def _context(request: OptimizationRequest) -> tuple[GpuSpec, SearchSpace, ConfigEvaluator]:
    gpu = validate_request(request)
    return gpu, build_space(request, gpu), ConfigEvaluator(request, gpu)


def start_search(request: OptimizationRequest) -> SearchState:
    """Validate the request and evaluate NSGA-II's initial population (generation 1), seeded with the
    direct-search configs so the search starts from every sensible TP x PP x replicas split."""
    if request.method != Method.REGRESSOR:
        validate_request(request)
        return SearchState(request=request, done=True)
    gpu, space, evaluator = _context(request)
    algorithm, problem = _new_algorithm(request, space, initial_genes(request, space, gpu))
    pop = algorithm.infill()
    _evaluate_population(pop, problem, space, evaluator)
    algorithm.advance(infills=pop)
    genes = [[int(v) for v in row] for row in algorithm.pop.get("X")]
    archive = sorted({tuple(int(v) for v in row) for row in pop.get("X")})
    return SearchState(
        request=request,
        generation=1,
        population=genes,
        rng_state=_save_rng(algorithm),
        archive=[list(a) for a in archive],
        done=request.generations <= 1,
    )


def advance_search(state: SearchState, generations: int) -> SearchState:
    """Run up to `generations` more NSGA-II generations from `state` (stops at the request's total)."""
    if state.done or generations <= 0:
        return state
    request = state.request
    _, space, evaluator = _context(request)
    population, rng_words, archive = state.population, state.rng_state, {tuple(a) for a in state.archive}
    generation, done = state.generation, state.done
    for _ in range(generations):
        if generation >= request.generations:
            done = True
            break
        algorithm, problem = _new_algorithm(request, space)
        _load_rng(algorithm, rng_words)
        # Rebuild the ranked population exactly as stored, then let pymoo mate, evaluate and select once.
        algorithm._initialize()
        pop = Population.new("X", np.array(population, dtype=float))
        _evaluate_population(pop, problem, space, evaluator)
        algorithm.pop = algorithm.survival.do(
            problem, pop, n_survive=len(pop), algorithm=algorithm, random_state=algorithm.random_state
        )
        algorithm.is_initialized = True
        algorithm.n_iter = generation
        offspring = algorithm.infill()
        generation += 1
        if offspring is None or len(offspring) == 0:
            done = True  # the space is exhausted: no new distinct configs to try
            rng_words = _save_rng(algorithm)
            break
        _evaluate_population(offspring, problem, space, evaluator)
        archive.update(tuple(int(v) for v in row) for row in offspring.get("X"))
        algorithm.advance(infills=offspring)
        population = [[int(v) for v in row] for row in algorithm.pop.get("X")]
        rng_words = _save_rng(algorithm)
    done = done or generation >= request.generations
    return SearchState(
        request=request,
        generation=generation,
        population=population,
        rng_state=rng_words,
        archive=[list(a) for a in sorted(archive)],
        done=done,
    )


# ----------------------------------------------------------------------------------------------- results


def _leanness(e: Evaluation) -> tuple:
    """Among configs that predict the same, the one reported (front and recommendation alike): fewest GPUs, then
    the smallest max_num_seqs and token budget, then the config itself so the choice never depends on the order
    configs were evaluated in."""
    return (e.config.total_gpus, e.config.max_num_seqs, e.config.max_num_batched_tokens, _config_key(e.config))


def _same_prediction(e: Evaluation) -> tuple:
    return tuple(round(v, 6) for v in e.objectives())


def pareto_front(evaluations: list[Evaluation]) -> list[Evaluation]:
    """Runnable configs not dominated on (capacity up, latency down, cost down), most capacity first."""
    runnable = [e for e in evaluations if e.prediction is not None]
    if not runnable:
        return []
    # Configs that predict the same (e.g. max_num_seqs above the concurrency) collapse to the leanest one.
    leanest: dict[tuple, Evaluation] = {}
    for e in sorted(runnable, key=_leanness):
        leanest.setdefault(_same_prediction(e), e)
    distinct = list(leanest.values())
    F = np.array([e.objectives() for e in distinct])
    front = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted(
        (distinct[i] for i in front), key=lambda e: (-e.prediction.max_throughput_tps, e.prediction.cost_per_hour)
    )


def _recommend(request: OptimizationRequest, evaluations: list[Evaluation]) -> Recommendation | None:
    runnable = [e for e in evaluations if e.prediction is not None]
    if not runnable:
        return None
    meeting = [e for e in runnable if e.meets_targets]
    if meeting:
        # Cheapest, then fastest, then the most capacity: a config that is cheapest and fastest but has less
        # capacity than an equally cheap and fast one is dominated, so it would not be on the front. Ties left
        # after that predict the same; the leanest is the one the front keeps too.
        best = min(
            meeting,
            key=lambda e: (
                round(e.prediction.cost_per_hour, 6),
                round(e.prediction.e2e_latency_ms, 6),
                -round(e.prediction.max_throughput_tps, 6),
                _leanness(e),
            ),
        )
        reason = f"cheapest of {len(meeting)} evaluated configs that meet every target"
        if request.targets.confidence == "high":
            reason += " with the pessimistic side (P90) of their predicted interval"
        return Recommendation(config=best.config, prediction=best.prediction, meets_targets=True, reason=reason)
    best = min(
        runnable,
        key=lambda e: (
            round(sum(m.shortfall_pct for m in e.misses), 6),
            round(e.prediction.cost_per_hour, 6),
            round(e.prediction.e2e_latency_ms, 6),
            -round(e.prediction.max_throughput_tps, 6),
            _leanness(e),
        ),
    )
    fails = ", ".join(f"{m.target} by {m.shortfall_pct:.0f} %" for m in best.misses)
    return Recommendation(
        config=best.config,
        prediction=best.prediction,
        meets_targets=False,
        failed_targets=best.misses,
        reason=f"no evaluated config meets every target; the closest misses {fails}",
    )


def result_front(evaluations: list[Evaluation]) -> list[Evaluation]:
    """The Pareto set reported: among configs meeting every target when some do, else among runnable ones."""
    meeting = [e for e in evaluations if e.meets_targets]
    return pareto_front(meeting or evaluations)


def _result(request: OptimizationRequest, gpu: GpuSpec, evaluations: list[Evaluation]) -> OptimizationResult:
    recommendation = _recommend(request, evaluations)
    front = result_front(evaluations)[:MAX_PARETO_REPORTED]
    rejected = [RejectedConfig(config=e.config, reasons=e.problems) for e in evaluations if e.problems]
    rejected.sort(key=lambda r: _config_key(r.config))
    if recommendation is None:
        message = "no config can run this model on the available GPUs"
    elif recommendation.meets_targets:
        message = recommendation.reason
    else:
        message = "none meets the targets: " + recommendation.reason
    message += "; " + calibration_note(request)
    return OptimizationResult(
        method=request.method,
        gpu_type=gpu.name,
        meets_targets=bool(recommendation and recommendation.meets_targets),
        recommendation=recommendation,
        pareto=[Candidate(config=e.config, prediction=e.prediction) for e in front],
        rejected=rejected[:MAX_REJECTED_REPORTED],
        evaluated=len(evaluations),
        message=message,
        calibration=request.group_calibration,
    )


def calibration_note(request: OptimizationRequest) -> str:
    """What the predictions rest on, for the result's message."""
    calibration = request.group_calibration
    if calibration is None:
        return "uncalibrated predictions (no measurements of this model, GPU type, runtime and precision)"
    if not calibration.consistent:
        return f"calibrated on {calibration.n} measurement(s), but {calibration.message}"
    return f"calibrated on {calibration.n} measurement(s) of {calibration.group.label()}"


def finish_search(state: SearchState) -> OptimizationResult:
    """Turn a (finished or not) search state into the result: Pareto set over the archive and a recommendation."""
    request = state.request
    if request.method == Method.MANUAL:
        return _manual(request)
    if request.method == Method.HEURISTIC:
        return _heuristic(request)
    gpu, space, evaluator = _context(request)
    evaluator.evaluate([space.decode(genes) for genes in state.archive])
    polish(space, evaluator)
    return _result(request, gpu, list(evaluator.cache.values()))


def polish(space: SearchSpace, evaluator: ConfigEvaluator, rounds: int = POLISH_ROUNDS) -> None:
    """Local refinement of the front (a memetic step after NSGA-II): try every neighbour of each front member
    that moves one or two knobs by one choice, and every replica count of it (throughput and cost scale with
    replicas, so a front member's scaled copies are likely front members too, however far apart), and keep
    going while that finds new configs."""
    moves = [(knob, step) for knob in range(5) for step in (-1, 1)]
    for _ in range(rounds):
        neighbours = {}
        for member in result_front(list(evaluator.cache.values())):
            genes = space.encode(member.config)
            for replicas in range(int(space.lower[REPLICAS_GENE]), int(space.upper[REPLICAS_GENE]) + 1):
                config = space.decode([*genes[:REPLICAS_GENE], replicas, *genes[REPLICAS_GENE + 1 :]])
                if _config_key(config) not in evaluator.cache:
                    neighbours[_config_key(config)] = config
            for i, first in enumerate(moves):
                for second in [None, *moves[i + 1 :]]:
                    candidate = list(genes)
                    for knob, step in [first] + ([second] if second else []):
                        candidate[knob] += step
                    if all(space.lower[k] <= candidate[k] <= space.upper[k] for k in range(5)):
                        config = space.decode(candidate)
                        key = _config_key(config)
                        if key not in evaluator.cache:
                            neighbours[key] = config
        if not neighbours:
            return
        evaluator.evaluate(list(neighbours.values()))


def _manual(request: OptimizationRequest) -> OptimizationResult:
    gpu = validate_request(request)
    assert request.config is not None  # validate_request guarantees it
    config = request.config.model_copy(update={"runtime": request.runtime})
    evaluation = ConfigEvaluator(request, gpu).evaluate([config])[0]
    if evaluation.prediction is None:
        # It cannot run here (memory, GPU count): still say what it would do, and why it is rejected.
        prediction = predict_many(
            request.model, gpu, [config], request.workload, request.price_per_hour,
            calibration=prediction_calibration(request),
        )[0]
        recommendation = Recommendation(
            config=config,
            prediction=prediction,
            meets_targets=False,
            failed_targets=target_misses(request, prediction),
            reason="the config cannot run: " + "; ".join(evaluation.problems),
        )
        return OptimizationResult(
            method=request.method,
            gpu_type=gpu.name,
            meets_targets=False,
            recommendation=recommendation,
            pareto=[],
            rejected=[RejectedConfig(config=config, reasons=evaluation.problems)],
            evaluated=1,
            message=recommendation.reason + "; " + calibration_note(request),
            calibration=request.group_calibration,
        )
    return _result(request, gpu, [evaluation])


def heuristic_genes(
    request: OptimizationRequest, space: SearchSpace, gpu: GpuSpec, with_capacity_variant: bool = False
) -> list[list[int]]:
    """Direct search: every TP x PP x replica count that the free GPUs allow, each with the largest max_num_seqs
    that fits in memory but no more than the per-replica concurrency needs, and the default token budget.

    `with_capacity_variant` adds, per split, the largest max_num_seqs that fits at all (most capacity).
    """
    from budsim.constraints import max_seqs_that_fit

    default_tokens = space.max_num_batched_tokens.index(8192)
    genes, capacity = [], []
    for tp_index, tp in enumerate(space.tp):
        for pp_index, pp in enumerate(space.pp):
            for replicas in range(1, space.max_replicas // (tp * pp) + 1):
                base = space.decode([tp_index, pp_index, 0, default_tokens, replicas])
                wanted = _round_up(math.ceil(request.workload.concurrency / replicas))
                fit = max_seqs_that_fit(request.model, gpu, base.model_copy(update={"max_num_batched_tokens": 16384}))
                fitting = [i for i, s in enumerate(space.max_num_seqs) if s <= max(1, fit)]
                enough = [i for i in fitting if space.max_num_seqs[i] <= wanted]
                genes.append([tp_index, pp_index, enough[-1] if enough else 0, default_tokens, replicas])
                if with_capacity_variant and fitting and fitting[-1] != genes[-1][2]:
                    capacity.append([tp_index, pp_index, fitting[-1], default_tokens, replicas])
    return genes + capacity


def _round_up(n: int) -> int:
    return next((s for s in MAX_NUM_SEQS_CHOICES if s >= n), MAX_NUM_SEQS_CHOICES[-1])


def initial_genes(request: OptimizationRequest, space: SearchSpace, gpu: GpuSpec) -> np.ndarray:
    """NSGA-II's first population: the direct-search configs, topped up with seeded random ones."""
    genes, seen = [], set()
    rng = np.random.default_rng(request.seed)

    def add(candidate: list[int]) -> None:
        key = _config_key(space.decode(candidate))
        if key not in seen and len(genes) < request.population_size:
            seen.add(key)
            genes.append(candidate)

    for candidate in heuristic_genes(request, space, gpu, with_capacity_variant=True):
        add(candidate)
    for _ in range(50 * request.population_size):
        if len(genes) >= request.population_size:
            break
        add([int(v) for v in rng.integers(space.lower, space.upper + 1)])
    return np.array(genes, dtype=float)


def _heuristic(request: OptimizationRequest) -> OptimizationResult:
    gpu, space, evaluator = _context(request)
    return _result(request, gpu, evaluator.evaluate([space.decode(g) for g in heuristic_genes(request, space, gpu)]))


def optimize(request: OptimizationRequest) -> OptimizationResult:
    """Answer an optimization request. Bad input raises InvalidRequest; unmet targets are a normal result."""
    if request.method != Method.REGRESSOR:
        validate_request(request)
        return finish_search(SearchState(request=request, done=True))
    state = start_search(request)
    state = advance_search(state, request.generations)
    return finish_search(state)
