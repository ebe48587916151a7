"""`python -m runtime serve MODEL [flags]`: the argv of `vllm serve`, plus `--sim-*` flags for the simulation.

A cluster backend builds one command for both runtimes and swaps the program (`vllm` or `python -m runtime`).
Flags of `vllm serve` that do not change the simulation are accepted and ignored; unknown ones are logged.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Any

import uvicorn

from core.replica_identity import ReplicaIdentity
from runtime.loader import ModelLoadError
from runtime.server import LOAD_FAILURE_EXIT_CODE, create_app
from runtime.settings import RuntimeSettings, TimingSettings, faults_from_env

log = logging.getLogger("runtime")

# `vllm serve` flags that take a value and do not change what the simulation does.
_IGNORED_VALUE_FLAGS = (
    "--dtype",
    "--swap-space",
    "--block-size",
    "--seed",
    "--max-num-batched-tokens",
    "--quantization",
    "--kv-cache-dtype",
    "--download-dir",
    "--uvicorn-log-level",
    "--tokenizer",
    "--revision",
    "--load-format",
    "--distributed-executor-backend",
    "--chat-template",
    "--data-parallel-size",
    "--tool-call-parser",
)
# ... and the ones that are switches.
_IGNORED_SWITCHES = (
    "--trust-remote-code",
    "--enforce-eager",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-chunked-prefill",
    "--enable-auto-tool-choice",
)


class DrainingServer(uvicorn.Server):
    """uvicorn with vLLM's graceful shutdown: on SIGTERM/SIGINT the listening socket closes (no new connections),
    /health answers 503 on connections still open, and requests in flight (streams included) run to their end for
    up to --sim-drain-timeout-s before the rest are cancelled. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            log.info("signal %d: draining (no new connections; in-flight requests finish)", sig)
        self.app.state.draining = True
        super().handle_exit(sig, frame)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve one model on an OpenAI-compatible HTTP API, like `vllm serve`")
    serve.add_argument("model", help="local model folder (or GGUF file) or a hub name such as org/model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", nargs="+", default=None, help="names clients use; default: MODEL")
    serve.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on /v1/*")
    serve.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    serve.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    serve.add_argument("--max-model-len", type=int, default=None, help="default: config.json or 4096")
    serve.add_argument("--max-num-seqs", type=int, default=256, help="sequences batched together; the rest wait")
    serve.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    sim = serve.add_argument_group("simulation (not vLLM flags)")
    sim.add_argument(
        "--sim-ttft-ms",
        type=float,
        default=50.0,
        help="prefill time of a prompt up to --sim-ref-prompt-tokens on an idle engine",
    )
    sim.add_argument("--sim-tpot-ms", type=float, default=10.0, help="time per output token with one sequence")
    sim.add_argument(
        "--sim-ref-prompt-tokens", type=int, default=512, help="prompts longer than this prefill proportionally longer"
    )
    sim.add_argument(
        "--sim-batch-tpot-factor",
        type=float,
        default=0.5,
        help="extra fraction of TPOT when the batch is full (linear in occupancy)",
    )
    sim.add_argument("--sim-load-delay-s", type=float, default=0.0, help="seconds before /health turns 200")
    sim.add_argument(
        "--sim-drain-timeout-s",
        type=float,
        default=30.0,
        help="on SIGTERM: stop accepting connections, let in-flight requests finish for up to this long",
    )
    sim.add_argument(
        "--sim-kv-cache-tokens",
        type=int,
        default=None,
        help="KV cache capacity in tokens; default max-num-seqs x max-model-len",
    )
    sim.add_argument(
        "--sim-gpu-memory-gb",
        type=float,
        default=None,
        help="per-GPU memory: loading fails when the weights / (tp x pp) do not fit",
    )
    sim.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    for flag in _IGNORED_VALUE_FLAGS:
        serve.add_argument(flag, default=None, help=argparse.SUPPRESS)
    for flag in _IGNORED_SWITCHES:
        serve.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    return parser


def settings_from_args(args: argparse.Namespace) -> RuntimeSettings:
    """RuntimeSettings from parsed flags and the BUD_SIM_* fault variables of the environment."""
    faults, load_error = faults_from_env()
    return RuntimeSettings(
        model=args.model,
        served_model_names=args.served_model_name or [],
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        gpu_memory_utilization=args.gpu_memory_utilization,
        timing=TimingSettings(
            ttft_ms=args.sim_ttft_ms,
            tpot_ms=args.sim_tpot_ms,
            ref_prompt_tokens=args.sim_ref_prompt_tokens,
            batch_tpot_factor=args.sim_batch_tpot_factor,
        ),
        load_delay_s=args.sim_load_delay_s,
        drain_timeout_s=args.sim_drain_timeout_s,
        kv_cache_tokens=args.sim_kv_cache_tokens,
        gpu_memory_gb=args.sim_gpu_memory_gb,
        faults=faults,
        load_error=load_error,
        identity=ReplicaIdentity.from_env(),
    )


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stdout, format="%(levelname)s %(asctime)s %(name)s: %(message)s"
    )
    if unknown:
        log.warning("ignoring flags the simulated runtime does not know: %s", " ".join(unknown))
    try:
        settings = settings_from_args(args)
    except ValueError as exc:  # includes pydantic's ValidationError: a flag or BUD_SIM_* value out of range
        log.error("invalid settings: %s", exc)
        return 2
    try:
        app = create_app(settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return LOAD_FAILURE_EXIT_CODE
    log.info(
        "simulated runtime for %s on http://%s:%d (tp=%d pp=%d max_num_seqs=%d ttft=%gms tpot=%gms load=%gs)",
        settings.model,
        settings.host,
        settings.port,
        settings.tensor_parallel_size,
        settings.pipeline_parallel_size,
        settings.max_num_seqs,
        settings.timing.ttft_ms,
        settings.timing.tpot_ms,
        settings.load_delay_s,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_s)),
    )
    server = DrainingServer(config, app)
    server.run()
    return 0 if server.started else 3
