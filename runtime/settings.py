"""What one simulated runtime process is told at start: vLLM's serving flags, the simulation's timing, its faults."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, model_validator

from core.replica_identity import ReplicaIdentity

# Environment variables that switch faults on at start (the same switches POST /sim/faults flips at run time).
ENV_FAIL_HEALTH = "BUD_SIM_FAIL_HEALTH"  # "1": /health answers 503 from the start
ENV_SLOWDOWN = "BUD_SIM_SLOWDOWN"  # float >= 1 usually: every prefill and token takes this many times longer
ENV_CRASH = "BUD_SIM_CRASH"  # "1": the process exits non-zero once the load delay has passed (a crash loop)
ENV_LOAD_ERROR = "BUD_SIM_LOAD_ERROR"  # text: loading fails with this message after the load delay
ENV_HEALTH_DELAY_S = "BUD_SIM_HEALTH_DELAY_S"  # float: /health answers only after this many seconds (an overloaded host)

DEFAULT_MAX_MODEL_LEN = 4096


class FaultState(BaseModel):
    """Fault switches; tests flip them to see how the control plane reacts."""

    fail_health: bool = False
    slowdown: float = Field(1.0, gt=0, description="multiplies prefill and per-token times")
    crash: bool = False
    health_delay_s: float = Field(0.0, ge=0, description="seconds /health waits before answering")


class FaultUpdate(BaseModel):
    """Body of POST /sim/faults: only the fields given change."""

    fail_health: bool | None = None
    slowdown: float | None = Field(None, gt=0)
    crash: bool | None = None
    health_delay_s: float | None = Field(None, ge=0)


class TimingSettings(BaseModel):
    """How long the simulated GPU takes (usually the optimizer's prediction for this model, GPU and config).

    prefill = ttft_ms x max(prompt_tokens, ref_prompt_tokens) / ref_prompt_tokens   (x slowdown)
    inter-token = tpot_ms x (1 + batch_tpot_factor x (running - 1) / (max_num_seqs - 1))   (x slowdown)
    so a lone request with a prompt up to ref_prompt_tokens sees exactly ttft_ms and tpot_ms.
    """

    ttft_ms: float = Field(50.0, ge=0)
    tpot_ms: float = Field(10.0, ge=0)
    ref_prompt_tokens: int = Field(512, ge=1)
    batch_tpot_factor: float = Field(0.5, ge=0)


class RuntimeSettings(BaseModel):
    """The parsed `serve` command line; field names follow vLLM's flags."""

    model: str
    served_model_names: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    max_num_seqs: int = Field(256, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    timing: TimingSettings = Field(default_factory=TimingSettings)
    load_delay_s: float = Field(0.0, ge=0)
    drain_timeout_s: float = Field(
        30.0, ge=0, description="on SIGTERM, how long in-flight requests (streams included) may take to finish"
    )
    kv_cache_tokens: int | None = Field(
        None, ge=1, description="KV cache capacity; default max_num_seqs x max_model_len"
    )
    gpu_memory_gb: float | None = Field(None, gt=0, description="per-GPU memory; enables the weights-fit check")
    faults: FaultState = Field(default_factory=FaultState)
    load_error: str | None = None
    identity: ReplicaIdentity | None = Field(None, description="who launched this replica as what; /health answers it")

    @model_validator(mode="after")
    def _default_names(self) -> RuntimeSettings:
        if not self.served_model_names:
            self.served_model_names = [self.model]
        return self

    @property
    def model_name(self) -> str:
        """The primary served name: the one metrics are labelled with and responses carry."""
        return self.served_model_names[0]


def faults_from_env(env: Mapping[str, str] | None = None) -> tuple[FaultState, str | None]:
    """Fault switches and the simulated load error named by BUD_SIM_* variables."""
    env = os.environ if env is None else env
    truthy = {"1", "true", "yes", "on"}
    faults = FaultState(
        fail_health=env.get(ENV_FAIL_HEALTH, "").strip().lower() in truthy,
        slowdown=float(env.get(ENV_SLOWDOWN, "1") or "1"),
        crash=env.get(ENV_CRASH, "").strip().lower() in truthy,
        health_delay_s=float(env.get(ENV_HEALTH_DELAY_S, "0") or "0"),
    )
    return faults, (env.get(ENV_LOAD_ERROR) or None)
