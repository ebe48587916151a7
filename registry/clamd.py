"""Async client for clamd's TCP protocol: PING, VERSION and INSTREAM, with a window policy for large files.

INSTREAM sends a file as `<4-byte big-endian length><bytes>` chunks ended by a zero length; clamd answers
`stream: OK`, `stream: <signature> FOUND` or `<reason> ERROR`. clamd refuses a stream longer than its
StreamMaxLength (it answers `INSTREAM size limit exceeded` and hangs up), so a file larger than that is scanned
as consecutive windows of at most `stream_max_bytes` that overlap by `window_overlap_bytes`:

    window k covers bytes [k * stride, k * stride + stream_max_bytes) with stride = stream_max_bytes - overlap

Every byte is scanned, and any byte pattern up to `overlap` bytes long lies whole inside at least one window, so
content signatures match wherever they sit in the file. What windows lose (whole-file hashes, formats that clamd
parses from the file's start) is covered by other checks; registry/README.md explains the policy.

The input is read once, front to back, and never held whole: memory is one chunk plus the overlap tail. While clamd
scans window k, window k+1 is already being sent (at most `max_windows_in_flight` awaiting their verdict).

Connection failures raise ClamdUnavailable, so callers retry; a scan never reports "clean" without clamd saying so.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

MiB = 1024 * 1024
DEFAULT_STREAM_MAX_BYTES = 64 * MiB  # devstack/clamd.py sets clamd's StreamMaxLength to this same number
DEFAULT_WINDOW_OVERLAP_BYTES = 1 * MiB  # longer than any byte signature we expect; costs 1/63 extra scanning
DEFAULT_CHUNK_BYTES = 1 * MiB  # one INSTREAM chunk


class ClamdUnavailable(ConnectionError):
    """clamd could not be reached, hung up mid-scan or did not answer in time: retry later, never call it clean."""


class ScanVerdict(BaseModel):
    """clamd's answer for one file, combined over all of its windows."""

    status: Literal["clean", "infected", "error"]
    signature: str | None = Field(default=None, description="signature name when infected, e.g. 'Eicar-Test-Signature'")
    detail: str = Field(default="", description="clamd's reply for the deciding window (the error text for errors)")
    scanned_bytes: int = Field(ge=0, description="bytes of the input read before the verdict was reached")
    windows: int = Field(ge=0, description="INSTREAM sessions used (1 for files within the stream limit)")
    window_start: int | None = Field(default=None, description="file offset of the window that was infected/errored")

    @property
    def clean(self) -> bool:
        return self.status == "clean"

    @property
    def infected(self) -> bool:
        return self.status == "infected"


def parse_reply(reply: str) -> tuple[Literal["clean", "infected", "error"], str | None]:
    """`stream: OK` -> clean; `stream: NAME FOUND` -> infected NAME; anything else (`... ERROR`) -> error."""
    text = reply.strip()
    if text.endswith("ERROR"):
        return "error", None
    body = text.split(":", 1)[1].strip() if ":" in text else text
    if body == "OK":
        return "clean", None
    if body.endswith(" FOUND"):
        return "infected", body[: -len(" FOUND")].strip()
    return "error", None


@dataclass
class _WindowResult:
    start: int
    reply: str


class _Window:
    """One INSTREAM session (one TCP connection) covering file bytes from `start`.

    The reply is awaited from the moment the window opens: clamd may answer early (size limit) and hang up, and the
    answer must be read before the broken connection hides it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, start: int):
        self.writer = writer
        self.start = start
        self.sent = 0
        self.reply: asyncio.Future[bytes] = asyncio.ensure_future(reader.readuntil(b"\0"))

    async def send(self, piece: memoryview | bytes) -> None:
        self.writer.write(struct.pack(">I", len(piece)))
        self.writer.write(piece)
        await self.writer.drain()
        self.sent += len(piece)

    async def read_reply(self, timeout_s: float) -> str:
        raw = await asyncio.wait_for(asyncio.shield(self.reply), timeout_s)
        return raw[:-1].decode("utf-8", errors="replace")

    def close(self) -> None:
        if not self.reply.done():
            self.reply.cancel()
        elif not self.reply.cancelled():
            self.reply.exception()  # mark it retrieved: the caller already turned it into ClamdUnavailable
        self.writer.close()


class ClamdClient:
    """Talks to one clamd over TCP. Each call opens its own connection(s), so one client may be shared freely."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 3310,
        *,
        stream_max_bytes: int = DEFAULT_STREAM_MAX_BYTES,
        window_overlap_bytes: int = DEFAULT_WINDOW_OVERLAP_BYTES,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 330.0,  # clamd's MaxScanTime (300 s, devstack/clamd.py) plus a margin
        max_windows_in_flight: int = 2,
    ):
        if window_overlap_bytes * 2 > stream_max_bytes:
            raise ValueError("window_overlap_bytes must be at most half of stream_max_bytes")
        if chunk_bytes <= 0 or max_windows_in_flight <= 0:
            raise ValueError("chunk_bytes and max_windows_in_flight must be positive")
        self.host = host
        self.port = port
        self.stream_max_bytes = stream_max_bytes
        self.window_overlap_bytes = window_overlap_bytes
        self.chunk_bytes = chunk_bytes
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.max_windows_in_flight = max_windows_in_flight

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- simple commands ---------------------------------------------------------------------------------------
    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ClamdUnavailable(f"clamd at {self.address} is unreachable: {exc!r}") from exc

    async def _command(self, command: bytes) -> str:
        reader, writer = await self._connect()
        try:
            writer.write(b"z" + command + b"\0")
            await writer.drain()
            raw = await asyncio.wait_for(reader.readuntil(b"\0"), self.connect_timeout_s)
            return raw[:-1].decode("utf-8", errors="replace")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            raise ClamdUnavailable(f"clamd at {self.address} failed on {command.decode()}: {exc!r}") from exc
        finally:
            writer.close()

    async def ping(self) -> bool:
        """True when clamd answers PONG; raises ClamdUnavailable when it cannot be reached."""
        return await self._command(b"PING") == "PONG"

    async def version(self) -> str:
        """e.g. 'ClamAV 1.4.6/0/...' (engine version / signature version / date)."""
        return await self._command(b"VERSION")

    # -- scanning ----------------------------------------------------------------------------------------------
    async def instream(self, chunks: AsyncIterable[bytes] | Iterable[bytes]) -> ScanVerdict:
        """Scan a byte stream of any length (read once, in order); see the module docstring for the window policy."""
        scan = _WindowedScan(self)
        try:
            try:
                async for chunk in _aiter(chunks):
                    if chunk and await scan.feed(chunk):
                        break  # a window was infected or errored: no need to read further
            except _StreamRejected:
                pass  # clamd answered early (its reply is recorded); finish() gathers the other windows
            return await scan.finish()
        finally:
            scan.abort()

    async def scan_bytes(self, data: bytes) -> ScanVerdict:
        return await self.instream([data])

    async def scan_file(self, path: Path | str) -> ScanVerdict:
        return await self.instream(file_chunks(Path(path), self.chunk_bytes))


async def file_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
    """A local file as an async chunk stream (reads run in a thread so the event loop stays free)."""
    with open(path, "rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
            yield chunk


async def _aiter(chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk


class _WindowedScan:
    """The state of one instream() call: the open window, the overlap tail and the windows awaiting a verdict."""

    def __init__(self, client: ClamdClient):
        self.client = client
        self.window: _Window | None = None
        self.tail = bytearray()  # the last `overlap` bytes of the current window, replayed at the next one's start
        self.pending: deque[asyncio.Task[_WindowResult]] = deque()
        self.results: list[_WindowResult] = []
        self.consumed = 0  # input bytes read so far
        self.windows_opened = 0

    async def feed(self, data: bytes) -> bool:
        """Send `data` on; returns True once a verdict other than clean is known (the caller may stop reading)."""
        limit, overlap = self.client.stream_max_bytes, self.client.window_overlap_bytes
        view = memoryview(data)
        while view:
            if self.window is None or self.window.sent >= limit:
                if self.window is not None and await self._close_window():
                    return True
                await self._open_window()
            window = self.window
            assert window is not None
            piece = view[: min(limit - window.sent, self.client.chunk_bytes)]
            tail_from = limit - overlap  # window positions [limit - overlap, limit) are replayed next time
            if window.sent + len(piece) > tail_from:
                self.tail += piece[max(0, tail_from - window.sent):]
            await self._send(window, piece)
            self.consumed += len(piece)
            view = view[len(piece):]
        return self._decided()

    async def finish(self) -> ScanVerdict:
        if self.window is None and not self.results and not self.pending:
            await self._open_window()  # an empty file still gets clamd's verdict
        if self.window is not None and not self._decided():
            await self._close_window()
        while self.pending and not self._decided():
            await self._collect_oldest()
        return self._verdict()

    def abort(self) -> None:
        """Release connections and reply waits that are no longer needed (after a verdict or an error)."""
        for task in self.pending:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # already surfaced (or moot): keep asyncio from logging it as unretrieved
        if self.window is not None:
            self.window.close()

    # -- internals ---------------------------------------------------------------------------------------------
    async def _open_window(self) -> None:
        reader, writer = await self.client._connect()
        replay = bytes(self.tail)
        self.tail.clear()
        self.window = _Window(reader, writer, start=self.consumed - len(replay))
        self.windows_opened += 1
        try:
            writer.write(b"zINSTREAM\0")
            if replay:
                await self._send(self.window, replay)
            else:
                await writer.drain()
        except OSError as exc:
            raise ClamdUnavailable(f"clamd at {self.client.address} dropped the connection: {exc!r}") from exc

    async def _send(self, window: _Window, piece: memoryview | bytes) -> None:
        try:
            await window.send(piece)
        except OSError as exc:
            # clamd hangs up early when a stream exceeds its StreamMaxLength; its reply says so if it is still there
            try:
                reply = await window.read_reply(timeout_s=1.0)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                raise ClamdUnavailable(f"clamd at {self.client.address} dropped the connection: {exc!r}") from exc
            self.results.append(_WindowResult(window.start, reply))
            window.close()
            self.window = None
            raise _StreamRejected from exc

    async def _close_window(self) -> bool:
        """Send the zero-length terminator and queue the wait for this window's reply; True when decided."""
        window = self.window
        assert window is not None
        self.window = None
        try:
            window.writer.write(struct.pack(">I", 0))
            await window.writer.drain()
        except OSError as exc:
            window.close()
            raise ClamdUnavailable(f"clamd at {self.client.address} dropped the connection: {exc!r}") from exc
        self.pending.append(asyncio.create_task(self._await_reply(window)))
        while len(self.pending) >= self.client.max_windows_in_flight and not self._decided():
            await self._collect_oldest()
        return self._decided()

    async def _await_reply(self, window: _Window) -> _WindowResult:
        try:
            return _WindowResult(window.start, await window.read_reply(self.client.reply_timeout_s))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            raise ClamdUnavailable(f"clamd at {self.client.address} gave no verdict: {exc!r}") from exc
        finally:
            window.close()

    async def _collect_oldest(self) -> None:
        self.results.append(await self.pending.popleft())

    def _decided(self) -> bool:
        while self.pending and self.pending[0].done():  # verdicts that already arrived count at once
            self.results.append(self.pending.popleft().result())
        return any(parse_reply(result.reply)[0] != "clean" for result in self.results)

    def _verdict(self) -> ScanVerdict:
        counts = {"scanned_bytes": self.consumed, "windows": self.windows_opened}
        ordered = sorted(self.results, key=lambda result: result.start)
        for wanted in ("infected", "error"):
            for result in ordered:
                status, signature = parse_reply(result.reply)
                if status == wanted:
                    detail = result.reply
                    if "size limit exceeded" in result.reply:
                        detail += (f" (clamd's StreamMaxLength is below this client's stream_max_bytes="
                                   f"{self.client.stream_max_bytes}; lower it or raise clamd's limit)")
                    return ScanVerdict(status=status, signature=signature, detail=detail,
                                       window_start=result.start, **counts)
        return ScanVerdict(status="clean", detail=ordered[-1].reply if ordered else "", **counts)


class _StreamRejected(Exception):
    """clamd answered before the stream ended (e.g. size limit); the reply is already in the results."""
