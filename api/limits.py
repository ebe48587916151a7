"""Bounds every request meets before any router sees it: body size (413), header size (431), NUL characters (422).

API bodies are small JSON documents: a body above `BUD_API_MAX_BODY_BYTES` is refused while it streams, without
buffering it. The one exception is a streamed route (model file uploads, `PUT /api/models/uploads/...`): its body
passes through unbuffered to the router, which writes it to S3 part by part, and is refused (413) above that
route's own limit, declared or counted as it streams. PostgreSQL cannot store a NUL character
in text, so a NUL anywhere in a query parameter, the path or a JSON string is refused here with a 422 that names
the field, instead of reaching the database as a 500.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

MAX_JSON_DEPTH = 64


class RequestLimits:
    """Pure ASGI middleware (it must see the body as it streams, which BaseHTTPMiddleware would buffer)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int,
                 streamed: tuple[tuple[str, str, int], ...] = ()):
        """`streamed`: (method, path prefix, body limit) of the routes whose bodies stream through unbuffered."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        if sum(len(name) + len(value) + 4 for name, value in headers) > self.max_header_bytes:
            await _reply(send, 431, f"request headers larger than {self.max_header_bytes} bytes")
            return
        if (problem := _nul_in_url(scope)) is not None:
            await _reply(send, 422, f"{problem}: contains a NUL character", [{"field": problem,
                                                                             "message": "contains a NUL character"}])
            return
        declared = dict(headers).get(b"content-length")
        if (limit := self._streamed_limit(scope)) is not None:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await _reply(send, 413, f"request body larger than {limit} bytes")
                return
            await self.app(scope, _counted(receive, limit), send)
            return
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, f"request body larger than {self.max_body_bytes} bytes")
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE") and declared in (None, b"0"):
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive, self.max_body_bytes)
        if not complete:
            await _reply(send, 413, f"request body larger than {self.max_body_bytes} bytes")
            return
        content_type = dict(headers).get(b"content-type", b"")
        if body and b"json" in content_type:
            if (field := _nul_in_json(body)) is not None:
                await _reply(send, 422, f"{field}: contains a NUL character",
                             [{"field": field, "message": "contains a NUL character"}])
                return
        await self.app(scope, _replay(body), send)


    def _streamed_limit(self, scope: Scope) -> int | None:
        method, path = scope.get("method"), scope.get("path", "")
        return next((limit for m, prefix, limit in self.streamed if m == method and path.startswith(prefix)), None)


def _counted(receive: Receive, limit: int) -> Receive:
    """`receive` for a streamed route, which answers 413 itself when the body it reads passes `limit`: the chunk
    crossing the limit still reaches the route (so it can say why); after it the body ends as a disconnect, so a
    route that kept reading could not go further."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        if size > limit:
            return {"type": "http.disconnect"}
        message = await receive()
        size += len(message.get("body", b""))
        return message

    return counted


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _nul_in_url(scope: Scope) -> str | None:
    path = scope.get("path", "")
    if "\x00" in path or "%00" in scope.get("raw_path", b"").decode("latin-1").lower():
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query.lower() or "\x00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return unquote(name).replace("\x00", "\\0") or "query"
        return "query"
    return None


def _nul_in_json(body: bytes) -> str | None:
    """The dotted path of the first string (key or value) holding a NUL, or None. Bodies that are not JSON, or
    nest deeper than MAX_JSON_DEPTH, are left to the router's validation to answer."""
    if b"\\u0000" not in body and b"\x00" not in body:
        return None  # the common case costs one scan of the bytes
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _walk(document, [], 0)


def _walk(value: Any, path: list[str], depth: int) -> str | None:
    if depth > MAX_JSON_DEPTH:
        return None
    if isinstance(value, str):
        return (".".join(path) or "body") if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return ".".join([*path, key.replace("\x00", "\\0")])
        if (found := _walk(item, [*path, str(key)], depth + 1)) is not None:
            return found
    return None


async def _reply(send: Send, status: int, message: str, details: Any = None) -> None:
    payload = json.dumps(error_body(status, message, details)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
