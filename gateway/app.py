"""The gateway as a plain ASGI application.

It is written against ASGI directly rather than a web framework because every microsecond on the proxy path is added
latency for every token of every stream; the handful of management routes are small enough not to need one either.

Upstream calls go through one shared aiohttp ClientSession. httpx was tried first: its connection pool (httpcore 1.0)
rescans every pooled connection on each request, which at 100 concurrent streams cost seconds of added latency
(encode/httpcore#1035); aiohttp's pool does not.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from typing import Any

import aiohttp

from gateway.balancer import Balancer
from gateway.metrics import CONTENT_TYPE, UNKNOWN, GatewayMetrics
from gateway.routes import RouteTable
from gateway.sources import RouteSource

log = logging.getLogger("gateway")

# Connection-level headers that must not be forwarded by a proxy (RFC 9110 section 7.6.1), plus the ones the HTTP
# client recomputes for the upstream request.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED_UPSTREAM = _HOP_BY_HOP | {b"host", b"content-length"}
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _RequestTooLarge(Exception):
    pass


class _Outcome(enum.Enum):
    RELAYED = "relayed"  # the client got an answer (possibly an error); done
    REFUSED = "refused"  # the replica could not be reached
    DROPPED = "dropped"  # the replica closed the connection before answering


class GatewayApp:
    """Route table + balancer + one shared HTTP client, served as an ASGI app.

    Run it under uvicorn (gateway.cli does) so the lifespan protocol starts the client and the route poller.
    """

    def __init__(
        self,
        source: RouteSource,
        *,
        poll_interval_s: float = 1.0,
        down_for_s: float = 3.0,
        connect_timeout_s: float = 2.0,
        upstream_timeout_s: float = 600.0,
        max_connections: int = 1000,
        max_body_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.source = source
        self.poll_interval_s = poll_interval_s
        self.table = RouteTable()
        self.balancer = Balancer(down_for_s=down_for_s)
        self.metrics = GatewayMetrics(lambda: len(self.table.routes), self.balancer.outstanding_by_replica)
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        # connect: waiting for a pooled connection plus opening one; sock_read: the longest silence mid-answer.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=10.0, sock_connect=connect_timeout_s, sock_read=upstream_timeout_s
        )
        self._client: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None

    # ----- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, keepalive_timeout=30.0),
            timeout=self._timeout,
            auto_decompress=False,  # relay bytes exactly as the replica sent them
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies into another's request
            trust_env=False,
        )
        await self.refresh_routes()
        self._poller = asyncio.create_task(self._poll_routes(), name="gateway-route-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

    async def refresh_routes(self) -> bool:
        """Load the source once; True when the table changed. A failing source keeps the last table."""
        try:
            table = await self.source.load()
        except Exception as exc:  # any source error: keep serving with what we have
            log.error("route source failed, keeping the last table: %s", exc)
            return False
        if table == self.table:
            return False
        self.table = table
        self.balancer.forget_except(table.routes.keys(), table.replica_urls())
        log.info("route table updated: %d routes, %d replicas", len(table.routes), len(table.replica_urls()))
        return True

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            await self.refresh_routes()

    # ----- ASGI -------------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path.startswith("/v1/"):
            await self._proxy(scope, receive, send)
        elif method == "GET" and path == "/v1/models":
            await _send_json(send, 200, {"object": "list", "data": [self._model_card(n) for n in self.table.routes]})
        elif method == "GET" and path.startswith("/v1/models/"):
            name = path[len("/v1/models/") :]
            if name in self.table.routes:
                await _send_json(send, 200, self._model_card(name))
            else:
                await _send_json(
                    send, 404, _error(f"The model `{name}` does not exist.", 404, "NotFoundError", "model")
                )
        elif method == "GET" and path == "/healthz":
            await _send_json(send, 200, {"status": "ok", "routes": len(self.table.routes)})
        elif method == "GET" and path == "/metrics":
            await _send(send, 200, self.metrics.exposition(), [(b"content-type", CONTENT_TYPE.encode())])
        else:
            await _send_json(send, 404, _error(f"{method} {path} is not served here", 404, "NotFoundError"))

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "bud-foundry"}

    # ----- proxy ------------------------------------------------------------------------------------------------

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        arrived = time.perf_counter()
        try:
            body = await self._read_body(receive)
        except _RequestTooLarge:
            await self._reject(send, UNKNOWN, 413, f"request body over {self.max_body_bytes} bytes", "BadRequestError")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            await self._reject(send, UNKNOWN, 400, "request body is not valid JSON", "BadRequestError")
            return
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            await self._reject(send, UNKNOWN, 400, "the body needs a string field `model`", "BadRequestError", "model")
            return
        backends = self.table.routes.get(model)
        if backends is None:
            await self._reject(send, UNKNOWN, 404, f"The model `{model}` does not exist.", "NotFoundError", "model")
            return

        target = scope["path"] if not scope.get("query_string") else f"{scope['path']}?{scope['query_string'].decode()}"
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _NOT_FORWARDED_UPSTREAM
        ]
        in_flight = self.metrics.in_flight.labels(model)
        in_flight.inc()
        tried: set[str] = set()
        dropped: set[str] = set()  # replicas that broke a connection once: a second time excludes them
        try:
            while True:
                choice = self.balancer.choose(model, backends, exclude=tried)
                if choice is None:
                    await self._reject(
                        send, model, 503, f"no ready replica for model `{model}`", "ServiceUnavailableError"
                    )
                    return
                endpoint_id, replica = choice.backend.endpoint_id, choice.replica
                upstream_body = body
                if choice.backend.served_model_name and choice.backend.served_model_name != model:
                    upstream_body = json.dumps({**payload, "model": choice.backend.served_model_name}).encode()
                self.balancer.acquire(replica)
                try:
                    outcome = await self._forward(
                        send, receive, model, endpoint_id, replica, target, headers, upstream_body, arrived
                    )
                finally:
                    self.balancer.release(replica)
                if outcome is _Outcome.RELAYED:
                    return
                # Nothing reached the client yet, so the request can go elsewhere. A refused connection rules the
                # replica out; a dropped one may be a stale keep-alive connection and gets one more chance.
                if outcome is _Outcome.REFUSED or replica in dropped:
                    tried.add(replica)
                dropped.add(replica)
        finally:
            in_flight.dec()

    async def _forward(
        self,
        send: Any,
        receive: Any,
        model: str,
        endpoint_id: str,
        replica: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        arrived: float,
    ) -> _Outcome:
        """Send upstream and relay the answer, or report how the replica failed before answering."""
        assert self._client is not None, "GatewayApp.start() was not called (run it under uvicorn's lifespan)"
        url = replica + target
        sent_at = time.perf_counter()
        try:
            response = await self._client.request("POST", url, headers=headers, data=body, allow_redirects=False)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused or unreachable: skip this replica for a while, not just for this request.
            self.balancer.mark_down(replica)
            self.metrics.upstream_errors.labels(endpoint_id, "connect").inc()
            log.warning("replica %s of %s unreachable (%s); marked down", replica, endpoint_id, exc)
            return _Outcome.REFUSED
        except aiohttp.SocketTimeoutError:
            self.metrics.upstream_errors.labels(endpoint_id, "timeout").inc()
            await self._reject(send, model, 504, "upstream timed out", "GatewayTimeoutError", endpoint=endpoint_id)
            return _Outcome.RELAYED
        except TimeoutError:  # no pooled connection freed up in time
            self.metrics.upstream_errors.labels(endpoint_id, "pool").inc()
            await self._reject(send, model, 503, "gateway overloaded", "ServiceUnavailableError", endpoint=endpoint_id)
            return _Outcome.RELAYED
        except aiohttp.ClientError as exc:
            # The connection broke before any answer (a replica dying, or a stale keep-alive connection).
            self.metrics.upstream_errors.labels(endpoint_id, "protocol").inc()
            log.warning("replica %s of %s dropped the request (%s)", replica, endpoint_id, exc.__class__.__name__)
            return _Outcome.DROPPED

        status = response.status
        response_headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]
        response_headers.append((b"x-bud-endpoint", endpoint_id.encode()))
        client_gone = asyncio.ensure_future(receive())  # completes on client disconnect (or once we finish)
        complete = False
        try:
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            first = True
            async for chunk in response.content.iter_any():
                if first:
                    self.metrics.upstream_latency.labels(model, endpoint_id).observe(time.perf_counter() - sent_at)
                    first = False
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if client_gone.done():
                    break
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                complete = True
        except aiohttp.ClientError as exc:
            # Mid-stream failure: the status line is already out, so the client sees a truncated body.
            self.metrics.upstream_errors.labels(endpoint_id, "stream").inc()
            log.warning("stream from %s of %s broke: %s", url, endpoint_id, exc.__class__.__name__)
        finally:
            if complete:
                response.release()  # back to the pool for the next request
            else:
                response.close()  # mid-answer: the connection cannot be reused
            if not client_gone.done():
                client_gone.cancel()
        outcome = str(status) if complete else "aborted"
        self.metrics.requests.labels(model, endpoint_id, outcome).inc()
        self.metrics.duration.labels(model, endpoint_id).observe(time.perf_counter() - arrived)
        return _Outcome.RELAYED

    async def _read_body(self, receive: Any) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _RequestTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _reject(
        self,
        send: Any,
        model: str,
        status: int,
        message: str,
        error_type: str,
        param: str | None = None,
        *,
        endpoint: str = "",
    ) -> None:
        self.metrics.requests.labels(model, endpoint, str(status)).inc()
        await _send_json(send, status, _error(message, status, error_type, param))


def _error(message: str, status: int, error_type: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Any, status: int, obj: Any) -> None:
    await _send(send, status, json.dumps(obj).encode(), _JSON_HEADERS)
