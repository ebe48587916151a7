"""The HTTP face of the simulated runtime: vLLM's OpenAI-compatible routes, /health, /metrics and fault switches."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from runtime.engine import EngineStats, SimEngine
from runtime.loader import ModelLoadError, check_model_source, check_weights_fit, max_position_embeddings
from runtime.metrics import CONTENT_TYPE, SimulatedGpus, VllmMetrics
from runtime.protocol import ChatCompletionRequest, CompletionRequest, error_body
from runtime.settings import DEFAULT_MAX_MODEL_LEN, FaultState, FaultUpdate, RuntimeSettings
from runtime.text import count_tokens, generate_words, render_chat

log = logging.getLogger("runtime")

DEFAULT_MAX_TOKENS = 16
LOAD_FAILURE_EXIT_CODE = 1
CRASH_EXIT_CODE = 70  # EX_SOFTWARE: tells a supervisor's log this was the simulated crash


class OpenAIError(Exception):
    """Raised by handlers; answered as OpenAI's error JSON with `status`."""

    def __init__(self, status: int, message: str, error_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, status, error_type, param)


@dataclass
class Prepared:
    """A validated generation request: what the engine needs and what the response echoes."""

    model: str
    prompt_key: str
    prompt_tokens: int
    pieces: list[str]  # the text of each generated token, in order
    include_usage: bool

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def exit_now(code: int, message: str) -> None:
    """Leave the process at once, as a crashing inference server does (no graceful shutdown)."""
    log.error(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class SimRuntime:
    """Everything one runtime process holds; `create_app` wires it to routes."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.model_dir: Path | None = check_model_source(settings.model)  # raises ModelLoadError
        self.max_model_len = settings.max_model_len or max_position_embeddings(self.model_dir) or DEFAULT_MAX_MODEL_LEN
        kv_tokens = settings.kv_cache_tokens or settings.max_num_seqs * self.max_model_len
        if kv_tokens < self.max_model_len:
            # vLLM refuses to start in this case, with this wording.
            raise ModelLoadError(
                "insufficient_gpu_memory",
                f"The model's max seq len ({self.max_model_len}) is larger than the maximum number of tokens that "
                f"can be stored in KV cache ({kv_tokens}). Try increasing `gpu_memory_utilization` or decreasing "
                "`max_model_len` when initializing the engine.",
            )
        self.faults: FaultState = settings.faults.model_copy()
        self.loaded = False
        self.metrics = VllmMetrics(settings.model_name, self._stats, SimulatedGpus.of(settings))
        self.engine = SimEngine(
            max_num_seqs=settings.max_num_seqs,
            kv_capacity_tokens=kv_tokens,
            timing=settings.timing,
            faults=self.faults,
            on_first_token=self.metrics.observe_first_token,
            on_token=self.metrics.observe_token,
            on_finish=self.metrics.observe_finish,
        )
        self.created = int(time.time())

    def _stats(self) -> EngineStats:  # late-bound: the engine is built after the metrics
        return self.engine.stats()

    async def load(self) -> None:
        """Simulated weight loading: wait, then fail the way the settings say or become ready."""
        await asyncio.sleep(self.settings.load_delay_s)
        if self.faults.crash:
            exit_now(CRASH_EXIT_CODE, "simulated crash while loading the model (fault switch 'crash')")
        try:
            if self.settings.load_error:
                raise ModelLoadError("load_error", self.settings.load_error)
            if self.settings.gpu_memory_gb is not None:
                gpus = self.settings.tensor_parallel_size * self.settings.pipeline_parallel_size
                check_weights_fit(
                    self.model_dir, self.settings.gpu_memory_gb, self.settings.gpu_memory_utilization, gpus
                )
        except ModelLoadError as exc:
            exit_now(LOAD_FAILURE_EXIT_CODE, str(exc))
        self.loaded = True
        log.info("model %s loaded; serving as %s", self.settings.model, ", ".join(self.settings.served_model_names))

    def apply_faults(self, update: FaultUpdate) -> FaultState:
        # Mutate in place: the engine holds the same object and reads it at every sleep.
        for name, value in update.model_dump(exclude_none=True).items():
            setattr(self.faults, name, value)
        if self.faults.crash:
            asyncio.get_running_loop().call_later(
                0.05, exit_now, CRASH_EXIT_CODE, "simulated crash (fault switch 'crash')"
            )
        return self.faults.model_copy()

    # ----- request checks -------------------------------------------------------------------------------------

    def check_serving(self, request: Request, model: str | None = None) -> None:
        if self.settings.api_key is not None:
            if request.headers.get("authorization") != f"Bearer {self.settings.api_key}":
                raise OpenAIError(401, "Unauthorized", "AuthenticationError")
        if not self.loaded:
            raise OpenAIError(503, "The model is still loading.", "ServiceUnavailableError")
        if model is not None and model not in self.settings.served_model_names:
            raise OpenAIError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def prepare(
        self,
        body: CompletionRequest | ChatCompletionRequest,
        prompt_key: str,
        prompt_tokens: int,
        max_tokens: int | None,
        *,
        continuation: bool,
    ) -> Prepared:
        """Check the length budget and decide the generated text. A completion continues the prompt, so every
        token starts with a space; a chat answer starts its first word without one."""
        max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        if prompt_tokens + max_tokens > self.max_model_len:
            raise OpenAIError(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                "BadRequestError",
            )
        words = generate_words(prompt_key, max_tokens, body.seed)
        pieces = [" " + word if continuation or index else word for index, word in enumerate(words)]
        return Prepared(body.model, prompt_key, prompt_tokens, pieces, body.include_usage)

    async def run_to_end(self, prepared: Prepared) -> None:
        async with aclosing(self.engine.generate(prepared.prompt_tokens, len(prepared.pieces))) as tokens:
            async for _ in tokens:
                pass


def _usage(prepared: Prepared) -> dict[str, int]:
    completion = len(prepared.pieces)
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "total_tokens": prepared.prompt_tokens + completion,
        "completion_tokens": completion,
    }


def _sse(payload: str) -> bytes:
    return f"data: {payload}\n\n".encode()


async def _stream_tokens(
    runtime: SimRuntime,
    prepared: Prepared,
    token_chunk: Callable[[str, bool], str],
    head_chunks: list[str],
    usage_chunk: Callable[[dict[str, int]], str],
) -> AsyncIterator[bytes]:
    """SSE for one request: optional head chunks with the first token, one chunk per token, usage, [DONE]."""
    last = len(prepared.pieces) - 1
    async with aclosing(runtime.engine.generate(prepared.prompt_tokens, len(prepared.pieces))) as tokens:
        async for index in tokens:
            parts = [_sse(chunk) for chunk in head_chunks] if index == 0 else []
            parts.append(_sse(token_chunk(prepared.pieces[index], index == last)))
            yield b"".join(parts)
    if prepared.include_usage:
        yield _sse(usage_chunk(_usage(prepared)))
    yield b"data: [DONE]\n\n"


def _describe_validation_error(exc: ValidationError) -> str:
    def describe(err: Any) -> str:
        if err.get("type") == "json_invalid":
            return f"body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        return f"{where}: {err.get('msg')}"

    return "; ".join(describe(err) for err in exc.errors()) or "invalid request"


_Body = TypeVar("_Body", bound=BaseModel)


async def _parse_body(request: Request, model: type[_Body]) -> _Body:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise OpenAIError(400, _describe_validation_error(exc), "BadRequestError") from exc


def _chunk_template(obj: dict[str, Any], hole: str) -> tuple[str, str]:
    """Split the JSON of `obj` around the string value `hole`, so per-token chunks are two concatenations."""
    encoded = json.dumps(obj, separators=(",", ":"))
    marker = json.dumps(hole)
    prefix, suffix = encoded.split(marker)
    return prefix, suffix


def _completion_stream(runtime: SimRuntime, prepared: Prepared, request_id: str, created: int) -> StreamingResponse:
    base = {"id": request_id, "object": "text_completion", "created": created, "model": prepared.model}

    def choice(finish_reason: str | None) -> dict[str, Any]:
        return {
            **base,
            "choices": [
                {"index": 0, "text": "\0", "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
            ],
        }

    return _token_stream(runtime, prepared, base, choice(None), choice("length"), head_chunks=[])


def _chat_stream(runtime: SimRuntime, prepared: Prepared, request_id: str, created: int) -> StreamingResponse:
    base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": prepared.model}

    def choice(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    role_chunk = json.dumps(choice({"role": "assistant", "content": ""}, None), separators=(",", ":"))
    return _token_stream(
        runtime, prepared, base, choice({"content": "\0"}, None), choice({"content": "\0"}, "length"), [role_chunk]
    )


def _token_stream(
    runtime: SimRuntime,
    prepared: Prepared,
    base: dict[str, Any],
    token_template: dict[str, Any],
    last_token_template: dict[str, Any],
    head_chunks: list[str],
) -> StreamingResponse:
    """SSE response whose token chunks are the templates with the token text in place of the NUL placeholder."""
    prefix, suffix = _chunk_template(token_template, "\0")
    last_prefix, last_suffix = _chunk_template(last_token_template, "\0")

    def token_chunk(text: str, is_last: bool) -> str:
        if is_last:
            return last_prefix + json.dumps(text) + last_suffix
        return prefix + json.dumps(text) + suffix

    def usage_chunk(usage: dict[str, int]) -> str:
        return json.dumps({**base, "choices": [], "usage": usage}, separators=(",", ":"))

    stream = _stream_tokens(runtime, prepared, token_chunk, head_chunks, usage_chunk)
    return StreamingResponse(stream, media_type="text/event-stream")


def create_app(settings: RuntimeSettings) -> Starlette:
    """The ASGI app for one simulated runtime; raises ModelLoadError when the model cannot be served at all.

    Plain Starlette rather than FastAPI: the runtime starts in about half the time, which every local deployment
    and every test that starts one waits for.
    """
    runtime = SimRuntime(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        load_task = asyncio.create_task(runtime.load())
        yield
        load_task.cancel()

    async def health(_: Request) -> Response:
        if runtime.faults.health_delay_s:
            await asyncio.sleep(runtime.faults.health_delay_s)
        draining = getattr(app.state, "draining", False)  # set on SIGTERM: readiness fails while draining
        status = 200 if runtime.loaded and not runtime.faults.fail_health and not draining else 503
        if settings.identity is None:
            return Response(status_code=status)  # vLLM's empty answer
        # Whatever the status, the answer proves which replica this is (a supervisor tells it from a reused port).
        return JSONResponse(settings.identity.model_dump(), status_code=status)

    async def version(_: Request) -> Response:
        return JSONResponse({"version": "bud-sim-0.1.0"})

    async def metrics(_: Request) -> Response:
        return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE)

    async def get_faults(_: Request) -> Response:
        return JSONResponse(runtime.faults.model_dump())

    async def set_faults(request: Request) -> Response:
        update = await _parse_body(request, FaultUpdate)
        log.warning("fault switches set: %s", update.model_dump(exclude_none=True))
        return JSONResponse(runtime.apply_faults(update).model_dump())

    async def list_models(request: Request) -> Response:
        runtime.check_serving(request)
        data = [
            {
                "id": name,
                "object": "model",
                "created": runtime.created,
                "owned_by": "vllm",
                "root": settings.model,
                "parent": None,
                "max_model_len": runtime.max_model_len,
            }
            for name in settings.served_model_names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def completions(request: Request) -> Response:
        runtime.check_serving(request)
        body = await _parse_body(request, CompletionRequest)
        runtime.check_serving(request, body.model)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) != 1:
                raise OpenAIError(400, "the simulated runtime takes one prompt per request", "BadRequestError")
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_key, prompt_tokens = prompt, count_tokens(prompt)
        else:
            prompt_key, prompt_tokens = json.dumps(prompt), len(prompt)
        prepared = runtime.prepare(body, prompt_key, prompt_tokens, body.max_tokens, continuation=True)
        request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _completion_stream(runtime, prepared, request_id, created)
        await runtime.run_to_end(prepared)
        choice = {"index": 0, "text": prepared.text, "logprobs": None, "finish_reason": "length", "stop_reason": None}
        return JSONResponse(
            {
                "id": request_id,
                "object": "text_completion",
                "created": created,
                "model": body.model,
                "choices": [choice],
                "usage": _usage(prepared),
            }
        )

    async def chat_completions(request: Request) -> Response:
        runtime.check_serving(request)
        body = await _parse_body(request, ChatCompletionRequest)
        runtime.check_serving(request, body.model)
        prompt = render_chat([(m.role, m.text()) for m in body.messages])
        max_tokens = body.max_completion_tokens or body.max_tokens
        prepared = runtime.prepare(body, prompt, count_tokens(prompt), max_tokens, continuation=False)
        request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return _chat_stream(runtime, prepared, request_id, created)
        await runtime.run_to_end(prepared)
        message = {"role": "assistant", "content": prepared.text, "tool_calls": []}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "length", "stop_reason": None}
        return JSONResponse(
            {
                "id": request_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [choice],
                "usage": _usage(prepared),
            }
        )

    async def openai_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OpenAIError)
        return JSONResponse(exc.body, status_code=exc.status)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/sim/faults", get_faults, methods=["GET"]),
            Route("/sim/faults", set_faults, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ],
        exception_handlers={OpenAIError: openai_error},
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app
