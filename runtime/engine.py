"""The simulated engine: continuous batching with a FIFO waiting queue and a timing model instead of a GPU.

Each request is one coroutine. It waits in the queue until a batch slot and enough KV cache are free (first come,
first served, like vLLM's scheduler), then sleeps for its prefill and between tokens. Sleeps are scheduled against
absolute deadlines on the event loop clock, so hundreds of concurrent streams cost timers, not CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from runtime.settings import FaultState, TimingSettings


@dataclass
class EngineStats:
    """A snapshot for /metrics."""

    running: int
    waiting: int
    kv_tokens_in_use: int
    kv_capacity_tokens: int
    busy_s: float = 0.0  # seconds so far with at least one sequence running (the simulated GPU computing)

    @property
    def kv_usage(self) -> float:
        return self.kv_tokens_in_use / self.kv_capacity_tokens if self.kv_capacity_tokens else 0.0


@dataclass
class RequestTiming:
    """What one finished (or aborted) request measured, in seconds."""

    prompt_tokens: int
    generated_tokens: int
    queued_s: float
    ttft_s: float | None
    e2e_s: float
    finished: bool


@dataclass(eq=False)
class _Sequence:
    seq_id: int
    prompt_tokens: int
    max_tokens: int
    arrival: float  # time.perf_counter(): metrics want sub-millisecond precision, uvloop's clock has 1 ms
    admitted: asyncio.Future[None] | None = None
    generated: int = 0
    kv_tokens: int = 0  # tokens this sequence holds in the KV cache right now
    reserved_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        # Reserve the whole sequence up front so an admitted request never needs preempting.
        self.reserved_tokens = self.prompt_tokens + self.max_tokens


class SimEngine:
    """Admits up to `max_num_seqs` sequences whose tokens fit the KV cache; the rest wait in arrival order."""

    def __init__(
        self,
        *,
        max_num_seqs: int,
        kv_capacity_tokens: int,
        timing: TimingSettings,
        faults: FaultState,
        on_first_token: Callable[[RequestTiming], None] | None = None,
        on_token: Callable[[], None] | None = None,
        on_finish: Callable[[RequestTiming], None] | None = None,
    ) -> None:
        self.max_num_seqs = max_num_seqs
        self.kv_capacity_tokens = kv_capacity_tokens
        self.timing = timing
        self.faults = faults  # shared object: fault switches take effect at the next sleep
        self._on_first_token = on_first_token
        self._on_token = on_token
        self._on_finish = on_finish
        self._ids = itertools.count()
        self._running: set[_Sequence] = set()
        self._waiting: deque[_Sequence] = deque()
        self._kv_reserved = 0
        self._kv_in_use = 0
        self._busy_s = 0.0  # closed busy periods
        self._busy_since: float | None = None  # perf_counter() when the open busy period began

    def stats(self) -> EngineStats:
        return EngineStats(len(self._running), len(self._waiting), self._kv_in_use, self.kv_capacity_tokens,
                           self.busy_seconds())

    def busy_seconds(self) -> float:
        """Time so far during which a batch was running: what GPU utilization samples."""
        open_period = time.perf_counter() - self._busy_since if self._busy_since is not None else 0.0
        return self._busy_s + open_period

    def prefill_seconds(self, prompt_tokens: int) -> float:
        ref = self.timing.ref_prompt_tokens
        return self.timing.ttft_ms / 1000 * max(prompt_tokens, ref) / ref * self.faults.slowdown

    def decode_seconds(self, running: int) -> float:
        occupancy = (running - 1) / max(1, self.max_num_seqs - 1)
        return self.timing.tpot_ms / 1000 * (1 + self.timing.batch_tpot_factor * occupancy) * self.faults.slowdown

    async def generate(self, prompt_tokens: int, max_tokens: int) -> AsyncIterator[int]:
        """Yield token indexes 0..max_tokens-1 at simulated times. Closing the generator early aborts the request."""
        if prompt_tokens + max_tokens > self.kv_capacity_tokens:
            raise ValueError(
                f"request needs {prompt_tokens + max_tokens} KV cache tokens, capacity is {self.kv_capacity_tokens}"
            )
        loop = asyncio.get_running_loop()
        seq = _Sequence(next(self._ids), prompt_tokens, max_tokens, time.perf_counter())
        ttft: float | None = None
        queued = 0.0
        try:
            await self._admit(seq, loop)
            queued = time.perf_counter() - seq.arrival
            self._use_kv(seq, prompt_tokens)
            deadline = loop.time() + self.prefill_seconds(prompt_tokens)
            for index in range(max_tokens):
                if index:
                    deadline += self.decode_seconds(len(self._running))
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq.generated += 1
                self._use_kv(seq, 1)
                if index == 0:
                    ttft = time.perf_counter() - seq.arrival
                    if self._on_first_token:
                        self._on_first_token(self._timing(seq, queued, ttft, finished=False))
                if self._on_token:
                    self._on_token()
                yield index
        finally:
            self._release(seq)
            if self._on_finish:
                finished = seq.generated == max_tokens
                self._on_finish(self._timing(seq, queued, ttft, finished=finished))

    @staticmethod
    def _timing(seq: _Sequence, queued: float, ttft: float | None, *, finished: bool) -> RequestTiming:
        e2e = time.perf_counter() - seq.arrival
        return RequestTiming(seq.prompt_tokens, seq.generated, queued, ttft, e2e, finished)

    def _use_kv(self, seq: _Sequence, tokens: int) -> None:
        seq.kv_tokens += tokens
        self._kv_in_use += tokens

    def _fits(self, seq: _Sequence) -> bool:
        return (
            len(self._running) < self.max_num_seqs
            and self._kv_reserved + seq.reserved_tokens <= self.kv_capacity_tokens
        )

    async def _admit(self, seq: _Sequence, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waiting and self._fits(seq):
            self._start(seq)
            return
        seq.admitted = loop.create_future()
        self._waiting.append(seq)
        try:
            await seq.admitted
        except asyncio.CancelledError:
            if seq in self._waiting:
                self._waiting.remove(seq)
                self._admit_waiting()  # the head may have been blocking smaller requests behind it
            raise

    def _start(self, seq: _Sequence) -> None:
        if not self._running:
            self._busy_since = time.perf_counter()
        self._running.add(seq)
        self._kv_reserved += seq.reserved_tokens

    def _release(self, seq: _Sequence) -> None:
        if seq in self._running:
            self._running.discard(seq)
            self._kv_reserved -= seq.reserved_tokens
            self._kv_in_use -= seq.kv_tokens
            if not self._running and self._busy_since is not None:
                self._busy_s += time.perf_counter() - self._busy_since
                self._busy_since = None
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        # Strict FIFO: the head waits until it fits, later arrivals wait behind it.
        while self._waiting and self._fits(self._waiting[0]):
            seq = self._waiting.popleft()
            self._start(seq)
            assert seq.admitted is not None
            if not seq.admitted.done():
                seq.admitted.set_result(None)
