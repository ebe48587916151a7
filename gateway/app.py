"""The gateway as a plain ASGI application.

It is written against ASGI directly rather than a web framework because every microsecond on the proxy path is added
latency for every token of every stream; the handful of management routes are small enough not to need one either.

Upstream calls go through one shared aiohttp ClientSession (a second one, with its own connection pool, for external
providers). httpx was tried first: its connection pool (httpcore 1.0) rescans every pooled connection on each
request, which at 100 concurrent streams cost seconds of added latency (encode/httpcore#1035); aiohttp's pool does
not.

What one /v1 request goes through, none of it a database round trip:
1. Key: `Authorization: Bearer <key>` looked up in the in-memory key table (gateway.keys); missing, unknown,
   revoked or expired keys get the same 401. A key sees only its project's routes, and only the ones it names if it
   names any; any other model is a 404 "does not exist", like a model that does not exist at all.
2. Limits: one Redis round trip (gateway.limits) when the key or its project has a limit; 429 with Retry-After.
3. Choice: a primary backend by weight, its least busy replica; the fallbacks when no primary replica is usable, or
   when every primary replica has more than the route's spill_queue_depth requests in flight from this gateway (the
   gateway counts its own outstanding requests per replica; other gateways' are not seen). A route with no replica
   anywhere waits up to `cold_start_wait_s` for one to appear, noting the demand so the endpoint is woken.
4. Forwarding: the client's Authorization never goes upstream; a provider backend gets its own key and its model
   name. A refused connection moves on to the next replica or backend (nothing reached it). A request that reached
   an upstream which then dropped the connection or answered 5xx before any byte was relayed is retried once on
   another replica or backend; after the first byte nothing is retried.
5. Answer: relayed as it arrives, with `x-bud-backend` (endpoint id, or `<provider name>/<model>`). A provider's
   error status is passed on as an OpenAI error naming the provider, its key scrubbed from the message.
6. Metering: tokens from the answer's usage (non-streaming: the JSON body; streaming: the final usage chunk. The
   gateway asks for that chunk itself, `stream_options.include_usage`, when the client streams without it, and
   removes it from what the client receives), counted in Redis for tpm and the monthly quota, in Prometheus by
   project, route and backend, and one usage row per request, batched to PostgreSQL (gateway.usage).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.balancer import Balancer, Choice
from gateway.demand import DemandRecorder
from gateway.keys import KeyEntry, KeyStore
from gateway.limits import Limiter
from gateway.metrics import CONTENT_TYPE, UNKNOWN, GatewayMetrics
from gateway.provider_guard import GuardedResolver, literal_host_refusal
from gateway.routes import Backend, RouteTable
from gateway.sources import RouteSource
from gateway.usage import UsageRecorder

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
# The client's Authorization carries its inference key: it never leaves the gateway.
_NOT_FORWARDED_UPSTREAM = _HOP_BY_HOP | {b"host", b"content-length", b"authorization"}
_NOT_RELAYED_ON_ERROR = _HOP_BY_HOP | {b"content-length", b"content-encoding"}
_JSON_HEADERS = [(b"content-type", b"application/json")]
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
UPSTREAM_KEEPALIVE_S = 4.0
_MAX_ERROR_BODY = 256 * 1024  # an upstream error body held to be relayed later, or reshaped
_MAX_ROUTE_LABEL = 200
_NONE = "_none"  # project label for requests without a valid key
_AUTH_ERROR = json.dumps(
    {"error": {"message": "Invalid or missing API key. Send `Authorization: Bearer <inference key>`.",
               "type": "authentication_error", "param": None, "code": 401}}  # fmt: skip
).encode()
_AUTH_HEADERS = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]


class _RequestTooLarge(Exception):
    pass


class _Outcome(enum.Enum):
    RELAYED = "relayed"  # the client got an answer (possibly an error); done
    REFUSED = "refused"  # the upstream could not be reached: nothing was sent
    DROPPED = "dropped"  # the upstream closed the connection before answering
    FAILED = "failed"  # the upstream answered 5xx; held in _Attempt.error, nothing relayed yet


class _Attempt:
    """What one request learned on its way (one small object per request)."""

    __slots__ = ("status", "prompt_tokens", "completion_tokens", "ttft_ms", "backend", "error")

    def __init__(self) -> None:
        self.status = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ttft_ms: float | None = None
        self.backend: Backend | None = None
        self.error: tuple[int, list[tuple[bytes, bytes]], bytes, Backend] | None = None  # a 5xx not yet relayed


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    project_id: str | None
    primaries: tuple[Backend, ...]
    fallbacks: tuple[Backend, ...]
    spill_queue_depth: int | None
    cold: bool  # no replica anywhere: wait for one (scale from zero)
    endpoint_ids: tuple[str, ...]  # the primaries' endpoints, for demand notes


def _compile(table: RouteTable, allow_private_providers: bool) -> dict[str, _Route]:
    compiled = {}
    for name, backends in table.routes.items():
        info = table.info.get(name)
        if not allow_private_providers:
            backends = tuple(b for b in backends if not _refused_provider(b))
        primaries = tuple(b for b in backends if not b.fallback)
        fallbacks = tuple(b for b in backends if b.fallback)
        endpoint_ids = tuple(b.endpoint_id for b in primaries if b.provider is None and b.weight > 0)
        compiled[name] = _Route(
            name=name,
            project_id=info.project_id if info else None,
            primaries=primaries,
            fallbacks=fallbacks,
            spill_queue_depth=info.spill_queue_depth if info else None,
            cold=bool(endpoint_ids) and not any(b.replicas for b in backends if b.weight > 0 or b.fallback),
            endpoint_ids=endpoint_ids,
        )
    return compiled


def _refused_provider(backend: Backend) -> bool:
    if backend.provider is None:
        return False
    reason = literal_host_refusal(backend.provider.base_url)
    if reason is not None:
        log.error("provider %s left out: %s (BUD_PROVIDER_ALLOW_PRIVATE_URLS allows it)", backend.provider.name, reason)
    return reason is not None


class GatewayApp:
    """Route table + keys + limits + metering + one shared HTTP client, served as an ASGI app.

    Run it under uvicorn (gateway.cli does) so the lifespan protocol starts the client and the background tasks.
    `keys=None` serves /v1 without keys (a gateway on a private network); otherwise every /v1 call needs a key of
    `keys` and routes without a project are served to no one.
    """

    def __init__(
        self,
        source: RouteSource,
        *,
        keys: KeyStore | None = None,
        key_source: Any = None,
        limiter: Limiter | None = None,
        usage: UsageRecorder | None = None,
        demand: DemandRecorder | None = None,
        poll_interval_s: float = 1.0,
        down_for_s: float = 3.0,
        connect_timeout_s: float = 2.0,
        upstream_timeout_s: float = 600.0,
        max_connections: int = 1000,
        max_body_bytes: int = 32 * 1024 * 1024,
        cold_start_wait_s: float = 60.0,
        provider_allow_private: bool = False,
    ) -> None:
        self.source = source
        self.key_source = key_source  # something with start()/stop() keeping `keys` current (PostgresKeySource)
        self.keys = keys if keys is not None else getattr(key_source, "store", None)
        self.limiter = limiter
        self.usage = usage or UsageRecorder()
        self.demand = demand or DemandRecorder()
        self.poll_interval_s = poll_interval_s
        self.cold_start_wait_s = cold_start_wait_s
        self.provider_allow_private = provider_allow_private
        self.table = RouteTable()
        self._routes: dict[str, _Route] = {}
        self._table_changed = asyncio.Event()
        self._reload = asyncio.Event()  # set by a pushed change notice: reload now, not at the next poll
        self.balancer = Balancer(down_for_s=down_for_s)
        self.metrics = GatewayMetrics(lambda: len(self.table.routes), self.balancer.outstanding_by_replica)
        if limiter is not None:
            limiter.on_error = self.metrics.limit_store_errors.inc
        self.usage.on_dropped = self.metrics.usage_rows_dropped.inc
        self.usage.on_written = self.metrics.usage_rows_written.inc
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        # connect: waiting for a pooled connection plus opening one; sock_read: the longest silence mid-answer.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=10.0, sock_connect=connect_timeout_s, sock_read=upstream_timeout_s
        )
        self._client: aiohttp.ClientSession | None = None
        self._provider_client: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None

    # ----- lifecycle --------------------------------------------------------------------------------------------

    def _session(self, guarded: bool = False) -> aiohttp.ClientSession:
        resolver = GuardedResolver() if guarded else None  # providers: see gateway.provider_guard
        # Idle connections are closed before the runtimes' servers close them (uvicorn, vLLM's server: 5 s), so a
        # request never picks a connection the other side is closing at that moment (it would be retried).
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=UPSTREAM_KEEPALIVE_S, resolver=resolver
            ),
            timeout=self._timeout,
            auto_decompress=False,  # relay bytes exactly as the upstream sent them
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies into another's request
            trust_env=False,
        )

    async def start(self) -> None:
        self._client = self._session()
        self._provider_client = self._session(guarded=not self.provider_allow_private)
        if self.key_source is not None:
            await self.key_source.start()
        if self.limiter is not None:
            await self.limiter.start()
        await self.usage.start()
        await self.demand.start()
        await self.refresh_routes()
        self._poller = asyncio.create_task(self._poll_routes(), name="gateway-route-poller")
        watch = getattr(self.source, "watch", None)  # a source that pushes changes (PostgresRouteSource)
        if watch is not None:
            await watch(self.reload_routes)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        close = getattr(self.source, "close", None)
        if close is not None:
            await close()
        await self.usage.stop()  # the record first: every answered request becomes a row before exit
        await self.demand.stop()
        if self.limiter is not None:
            await self.limiter.stop()
        if self.key_source is not None:
            await self.key_source.stop()
        for client in (self._client, self._provider_client):
            if client is not None:
                await client.close()

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
        self._routes = _compile(table, self.provider_allow_private)
        self.balancer.forget_except(table.routes.keys(), table.replica_urls())
        changed, self._table_changed = self._table_changed, asyncio.Event()
        changed.set()  # wakes requests waiting for a replica
        log.info("route table updated: %d routes, %d replicas", len(table.routes), len(table.replica_urls()))
        return True

    def reload_routes(self) -> None:
        """Reload the route table now (the source announced a change); loads never overlap, and a notice that
        arrives during a load is followed by another."""
        self._reload.set()

    @property
    def route_table_version(self) -> int | None:
        """The version of the table served, for sources that have one."""
        return getattr(self.source, "version", None)

    async def _poll_routes(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reload.wait(), timeout=self.poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._reload.clear()
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
        elif method == "GET" and path.startswith("/v1/models"):
            await self._models(scope, send, path)
        elif method == "GET" and path == "/healthz":
            health: dict[str, Any] = {"status": "ok", "routes": len(self.table.routes)}
            if self.route_table_version is not None:  # a versioned source (PostgreSQL) says what it serves
                health["route_table_version"] = self.route_table_version
            await _send_json(send, 200, health)
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

    def _authenticate(self, scope: dict[str, Any]) -> KeyEntry | None:
        assert self.keys is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return self.keys.authenticate(value, time.time())
        return None

    def _visible(self, route: _Route | None, key: KeyEntry | None) -> bool:
        if route is None:
            return False
        if self.keys is None:
            return True
        return key is not None and route.project_id == key.project_id and key.may_use(route.name)

    async def _models(self, scope: dict[str, Any], send: Any, path: str) -> None:
        key = None
        if self.keys is not None:
            key = self._authenticate(scope)
            if key is None:
                self.metrics.auth_failures.inc()
                await _send(send, 401, _AUTH_ERROR, _AUTH_HEADERS)
                return
        if path == "/v1/models":
            cards = [_model_card(name) for name, route in self._routes.items() if self._visible(route, key)]
            await _send_json(send, 200, {"object": "list", "data": cards})
            return
        name = path[len("/v1/models/") :]
        if path.startswith("/v1/models/") and self._visible(self._routes.get(name), key):
            await _send_json(send, 200, _model_card(name))
        else:
            await _send_json(send, 404, _error(f"The model `{name}` does not exist.", 404, "NotFoundError", "model"))

    # ----- proxy ------------------------------------------------------------------------------------------------

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        arrived = time.perf_counter()
        key: KeyEntry | None = None
        if self.keys is not None:
            key = self._authenticate(scope)
            if key is None:
                self.metrics.auth_failures.inc()
                self._metered(None, None, UNKNOWN, "", 401, None, arrived)
                await _send(send, 401, _AUTH_ERROR, _AUTH_HEADERS)
                return
        try:
            body = await self._read_body(receive)
        except _RequestTooLarge:
            await self._reject(send, key, UNKNOWN, "", 413, f"request body over {self.max_body_bytes} bytes",
                               "BadRequestError", arrived=arrived)  # fmt: skip
            return
        try:
            payload = json.loads(body)
        except ValueError:
            await self._reject(send, key, UNKNOWN, "", 400, "request body is not valid JSON", "BadRequestError",
                               arrived=arrived)  # fmt: skip
            return
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            await self._reject(send, key, UNKNOWN, "", 400, "the body needs a string field `model`", "BadRequestError",
                               "model", arrived=arrived)  # fmt: skip
            return
        route = self._routes.get(model)
        if not self._visible(route, key):
            await self._reject(send, key, UNKNOWN, model[:_MAX_ROUTE_LABEL], 404,
                               f"The model `{model[:_MAX_ROUTE_LABEL]}` does not exist.", "NotFoundError", "model",
                               arrived=arrived)  # fmt: skip
            return
        assert route is not None
        if key is not None and self.limiter is not None:
            quota = self.keys.quotas.get(key.project_id) if self.keys is not None else None
            refusal = await self.limiter.admit(key.key_id, key.project_id, key.rpm, key.tpm, quota)
            if refusal is not None:
                self.metrics.rate_limited.labels(refusal.kind).inc()
                headers = [*_JSON_HEADERS, (b"retry-after", str(refusal.retry_after_s).encode())]
                await self._reject(send, key, model, model, 429, refusal.message, refusal.error_type,
                                   arrived=arrived, headers=headers)  # fmt: skip
                return

        stream = payload.get("stream") is True
        add_usage = False
        if stream:
            options = payload.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                add_usage = True
                payload = {**payload, "stream_options": {**(options if isinstance(options, dict) else {}),
                                                         "include_usage": True}}  # fmt: skip
                body = json.dumps(payload).encode()
        target = scope["path"] if not scope.get("query_string") else f"{scope['path']}?{scope['query_string'].decode()}"
        headers = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _NOT_FORWARDED_UPSTREAM
        ]
        attempt = _Attempt()
        in_flight = self.metrics.in_flight.labels(model)
        in_flight.inc()
        tried: set[str] = set()
        dropped: set[str] = set()  # replicas that broke a connection once: a second time excludes them
        retried = False
        waited_until: float | None = None
        unreachable: Backend | None = None  # the last backend that refused the connection
        try:
            while True:
                choice = self._choose(route, tried)
                if choice is None:
                    if route.cold and not tried and attempt.error is None and self.cold_start_wait_s > 0:
                        for endpoint_id in route.endpoint_ids:
                            self.demand.note(endpoint_id)
                        now = time.monotonic()
                        waited_until = waited_until or now + self.cold_start_wait_s
                        if now < waited_until:
                            try:
                                await asyncio.wait_for(self._table_changed.wait(), waited_until - now)
                            except TimeoutError:
                                pass
                            fresh = self._routes.get(model)
                            if fresh is not None and self._visible(fresh, key):
                                route = fresh
                                continue
                    if attempt.error is not None:
                        await self._relay_error(send, key, route, attempt, arrived)
                        return
                    message = f"no ready replica for model `{model}`"
                    if unreachable is not None and unreachable.provider is not None:
                        message = f"provider `{unreachable.provider.name}` could not be reached"
                    await self._reject(send, key, model, model, 503, message, "ServiceUnavailableError",
                                       backend=unreachable, arrived=arrived)  # fmt: skip
                    return
                backend, replica = choice.backend, choice.replica
                if backend.provider is None:
                    self.demand.note(backend.endpoint_id)
                if backend.fallback:  # the primaries could not take it: their demand still counts (wakes one at zero)
                    for endpoint_id in route.endpoint_ids:
                        self.demand.note(endpoint_id)
                upstream_body = body
                upstream_model = backend.provider.model if backend.provider is not None else backend.served_model_name
                if upstream_model and upstream_model != model:
                    upstream_body = json.dumps({**payload, "model": upstream_model}).encode()
                self.balancer.acquire(replica)
                try:
                    outcome = await self._forward(
                        send, receive, route, key, backend, replica, target, headers, upstream_body, arrived,
                        attempt, stream, add_usage, may_retry=not retried,
                    )  # fmt: skip
                finally:
                    self.balancer.release(replica)
                if outcome is _Outcome.RELAYED:
                    return
                if outcome is _Outcome.REFUSED:  # nothing reached it: try the next one, no retry spent
                    tried.add(replica)
                    unreachable = backend
                    continue
                if retried and outcome is _Outcome.DROPPED:
                    await self._reject(send, key, model, model, 502, "upstream closed the connection",
                                       "BadGatewayError", backend=backend, arrived=arrived)  # fmt: skip
                    return
                retried = True
                # A dropped connection may be a stale keep-alive one: that replica gets one more chance.
                if outcome is _Outcome.FAILED or replica in dropped:
                    tried.add(replica)
                dropped.add(replica)
        finally:
            in_flight.dec()

    def _choose(self, route: _Route, tried: set[str]) -> Choice | None:
        balancer, spill = self.balancer, route.spill_queue_depth
        if spill is None:
            choice = balancer.choose(route.name, route.primaries, tried)
            if choice is None and route.fallbacks:
                choice = balancer.choose(route.name, route.fallbacks, tried)
            return choice
        choice = balancer.choose(route.name, route.primaries, tried, max_outstanding=spill)
        if choice is None and route.fallbacks:
            choice = balancer.choose(route.name, route.fallbacks, tried)
        if choice is None:  # every primary is deep in requests and no fallback can help: queue on a primary
            choice = balancer.choose(route.name, route.primaries, tried)
        return choice

    async def _forward(
        self,
        send: Any,
        receive: Any,
        route: _Route,
        key: KeyEntry | None,
        backend: Backend,
        replica: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        arrived: float,
        attempt: _Attempt,
        stream: bool,
        add_usage: bool,
        *,
        may_retry: bool,
    ) -> _Outcome:
        """Send upstream and relay the answer, or report how the upstream failed before anything was relayed."""
        assert self._client is not None, "GatewayApp.start() was not called (run it under uvicorn's lifespan)"
        model, label = route.name, backend.label
        provider = backend.provider
        if provider is None:
            client, url = self._client, replica + target
        else:
            assert self._provider_client is not None
            client, url = self._provider_client, provider.base_url + target[3:]  # base_url already ends in /v1
            headers = [*headers, ("Authorization", f"Bearer {provider.api_key.get_secret_value()}")]
        sent_at = time.perf_counter()
        try:
            response = await client.request("POST", url, headers=headers, data=body, allow_redirects=False)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Refused or unreachable: skip this replica for a while, not just for this request.
            self.balancer.mark_down(replica)
            self.metrics.upstream_errors.labels(label, "connect").inc()
            log.warning("upstream %s of %s unreachable (%s); marked down", _where(backend, replica), label,
                        exc.__class__.__name__)  # fmt: skip
            return _Outcome.REFUSED
        except aiohttp.SocketTimeoutError:
            self.metrics.upstream_errors.labels(label, "timeout").inc()
            await self._reject(send, key, model, model, 504, "upstream timed out", "GatewayTimeoutError",
                               backend=backend, arrived=arrived)  # fmt: skip
            return _Outcome.RELAYED
        except TimeoutError:  # no pooled connection freed up in time
            self.metrics.upstream_errors.labels(label, "pool").inc()
            await self._reject(send, key, model, model, 503, "gateway overloaded", "ServiceUnavailableError",
                               backend=backend, arrived=arrived)  # fmt: skip
            return _Outcome.RELAYED
        except aiohttp.ClientError as exc:
            # The connection broke before any answer (an upstream dying, or a stale keep-alive connection).
            self.metrics.upstream_errors.labels(label, "protocol").inc()
            log.warning("upstream %s of %s dropped the request (%s)", _where(backend, replica), label,
                        exc.__class__.__name__)  # fmt: skip
            return _Outcome.DROPPED

        status = response.status
        if status >= 500 or (provider is not None and status >= 400):
            # Nothing relayed yet: hold the answer, so it can be retried elsewhere (5xx) or reshaped (a provider's).
            try:
                error_body = await response.content.read(_MAX_ERROR_BODY)
            except aiohttp.ClientError:
                error_body = b""
            finally:
                response.close()
            error_headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _NOT_RELAYED_ON_ERROR]
            attempt.error = (status, error_headers, error_body, backend)
            if status >= 500:
                self.metrics.upstream_errors.labels(label, f"status_{status // 100}xx").inc()
                if may_retry:
                    return _Outcome.FAILED
            await self._relay_error(send, key, route, attempt, arrived)
            return _Outcome.RELAYED

        attempt.backend, attempt.error = backend, None
        response_headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]
        event_stream = stream and response.content_type == "text/event-stream"
        if add_usage and event_stream:  # the body changes (the usage chunk is removed): not the upstream's length
            response_headers = [(k, v) for k, v in response_headers if k.lower() != b"content-length"]
        if provider is None:
            response_headers.append((b"x-bud-endpoint", backend.endpoint_id.encode()))
        response_headers.append((b"x-bud-backend", label.encode()))
        kept: list[bytes] = []  # non-streaming: the body (for its usage); streaming: the last few chunks
        pending = b""  # add_usage: an event not yet complete
        events = 0  # data events seen: the tokens of a stream the client left before its usage chunk
        client_gone = asyncio.ensure_future(receive())  # completes on client disconnect (or once we finish)
        complete = False
        try:
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            first = True
            async for chunk in response.content.iter_any():
                if first:
                    latency = time.perf_counter() - sent_at
                    self.metrics.upstream_latency.labels(model, label).observe(latency)
                    attempt.ttft_ms = (time.perf_counter() - arrived) * 1000
                    first = False
                if event_stream:
                    events += chunk.count(b"data: {")
                    if add_usage:
                        if pending:
                            chunk, pending = pending + chunk, b""
                        end = chunk.rfind(b"\n\n")  # events end in a blank line: hold a partial one back
                        if end < 0:
                            pending = chunk
                            continue
                        if end + 2 < len(chunk):
                            chunk, pending = chunk[: end + 2], chunk[end + 2 :]
                        if _USAGE.search(chunk) is not None:
                            chunk = self._take_usage_event(chunk, attempt)
                        if not chunk:
                            continue
                    else:
                        kept.append(chunk)
                        if len(kept) > 8:
                            del kept[0]
                elif status == 200:
                    kept.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if client_gone.done():
                    break
            else:
                if pending:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                complete = True
        except aiohttp.ClientError as exc:
            # Mid-stream failure: the status line is already out, so the client sees a truncated body.
            self.metrics.upstream_errors.labels(label, "stream").inc()
            log.warning("stream from %s of %s broke: %s", _where(backend, replica), label, exc.__class__.__name__)
        finally:
            if complete:
                response.release()  # back to the pool for the next request
            else:
                response.close()  # mid-answer: the connection cannot be reused
            if not client_gone.done():
                client_gone.cancel()
        if complete and status == 200 and kept:
            _read_usage(b"".join(kept), attempt)
        if event_stream and status == 200 and attempt.completion_tokens == 0 and events:
            # No usage chunk (the client left first, or the upstream sends none): about one token per event, less
            # the chat role event. Counted all the same, so leaving early does not dodge tpm or the quota.
            attempt.completion_tokens = max(1, events - 1)
        attempt.status = status if complete else 499
        outcome = str(status) if complete else "aborted"
        self.metrics.requests.labels(model, label, outcome).inc()
        self.metrics.duration.labels(model, label).observe(time.perf_counter() - arrived)
        self._finish(key, route, attempt, arrived)
        return _Outcome.RELAYED

    @staticmethod
    def _take_usage_event(chunk: bytes, attempt: _Attempt) -> bytes:
        """Remove the usage event (asked for by the gateway, not the client) from complete events; count it."""
        match = _USAGE.search(chunk)
        assert match is not None
        start = chunk.rfind(b"data:", 0, match.start())
        end = chunk.find(b"\n\n", match.end())
        if start < 0 or end < 0:
            return chunk
        _read_usage(chunk[start:end], attempt)
        return chunk[:start] + chunk[end + 2 :]

    def _finish(self, key: KeyEntry | None, route: _Route, attempt: _Attempt, arrived: float) -> None:
        """Count a relayed answer: tokens into the limits, the Prometheus counters and the usage row."""
        backend = attempt.backend
        label = backend.label if backend is not None else ""
        project = key.project_id if key is not None else _NONE
        tokens = attempt.prompt_tokens + attempt.completion_tokens
        if tokens:
            if key is not None and self.limiter is not None:
                has_quota = self.keys is not None and key.project_id in self.keys.quotas
                self.limiter.add_tokens(key.key_id, key.project_id, tokens, tpm=key.tpm is not None, quota=has_quota)
            self.metrics.prompt_tokens.labels(project, route.name, label).inc(attempt.prompt_tokens)
            self.metrics.completion_tokens.labels(project, route.name, label).inc(attempt.completion_tokens)
        self.metrics.project_requests.labels(project, route.name, label, str(attempt.status)).inc()
        kind, backend_id = _backend_kind(backend)
        self.usage.record(
            key.project_id if key is not None else None, key.key_id if key is not None else None, route.name, kind,
            backend_id, attempt.prompt_tokens, attempt.completion_tokens, attempt.status, attempt.ttft_ms,
            (time.perf_counter() - arrived) * 1000,
        )  # fmt: skip

    async def _relay_error(
        self, send: Any, key: KeyEntry | None, route: _Route, attempt: _Attempt, arrived: float
    ) -> None:
        """The held error answer: a provider's as an OpenAI error naming it (its key scrubbed), an endpoint's as is."""
        assert attempt.error is not None
        status, headers, body, backend = attempt.error
        attempt.backend, attempt.status, attempt.error = backend, status, None
        label = backend.label
        if backend.provider is not None:
            secret = backend.provider.api_key.get_secret_value()
            detail, error_type = _provider_message(body)
            if secret:
                detail = detail.replace(secret, "***")
            message = f"provider `{backend.provider.name}` answered {status}: {detail}"
            body = json.dumps(_error(message, status, error_type)).encode()
            headers = list(_JSON_HEADERS)
        headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-bud-backend", label.encode())]
        if backend.provider is None:
            headers.append((b"x-bud-endpoint", backend.endpoint_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        self.metrics.requests.labels(route.name, label, str(status)).inc()
        self.metrics.duration.labels(route.name, label).observe(time.perf_counter() - arrived)
        self._finish(key, route, attempt, arrived)

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

    def _metered(
        self,
        key: KeyEntry | None,
        backend: Backend | None,
        route_label: str,
        route: str,
        status: int,
        ttft_ms: float | None,
        arrived: float,
    ) -> None:
        project = key.project_id if key is not None else _NONE
        label = backend.label if backend is not None else ""
        self.metrics.project_requests.labels(project, route_label, label, str(status)).inc()
        kind, backend_id = _backend_kind(backend)
        self.usage.record(
            key.project_id if key is not None else None, key.key_id if key is not None else None, route, kind,
            backend_id, 0, 0, status, ttft_ms, (time.perf_counter() - arrived) * 1000,
        )  # fmt: skip

    async def _reject(
        self,
        send: Any,
        key: KeyEntry | None,
        route_label: str,
        route: str,
        status: int,
        message: str,
        error_type: str,
        param: str | None = None,
        *,
        backend: Backend | None = None,
        arrived: float,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Answer with an OpenAI error; `route_label` is a route of the table (or _unknown), `route` what the row
        says."""
        label = backend.label if backend is not None else ""
        self.metrics.requests.labels(route_label, label, str(status)).inc()
        self._metered(key, backend, route_label, route, status, None, arrived)
        extra = headers or _JSON_HEADERS
        if backend is not None:
            extra = [*extra, (b"x-bud-backend", label.encode())]
        await _send(send, status, json.dumps(_error(message, status, error_type, param)).encode(), extra)


def _where(backend: Backend, replica: str) -> str:
    """Where a request went, for logs: a replica URL, or a provider's name (never its key)."""
    return f"provider {backend.provider.name}" if backend.provider is not None else replica


def _backend_kind(backend: Backend | None) -> tuple[str, str]:
    if backend is None:
        return "none", ""
    if backend.provider is not None:
        return "provider", f"{backend.provider.provider_id}/{backend.provider.model}"
    return "endpoint", backend.endpoint_id


def _read_usage(body: bytes, attempt: _Attempt) -> None:
    """prompt_tokens and completion_tokens of the last usage object in `body` (left as they are when none)."""
    start = -1
    for match in _USAGE.finditer(body):
        start = match.end()
    if start < 0:
        return
    window = body[start : start + 2048]
    prompt, completion = _PROMPT_TOKENS.search(window), _COMPLETION_TOKENS.search(window)
    if prompt is not None:
        attempt.prompt_tokens = int(prompt.group(1))
    if completion is not None:
        attempt.completion_tokens = int(completion.group(1))


def _provider_message(body: bytes) -> tuple[str, str]:
    """A provider error body's message and type (OpenAI's shape when it has it), bounded for the client."""
    text, error_type = body[:2000].decode("utf-8", "replace").strip(), "provider_error"
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            if isinstance(error.get("message"), str):
                text = error["message"][:2000]
            if isinstance(error.get("type"), str):
                error_type = error["type"][:100]
        elif isinstance(error, str):
            text = error[:2000]
    return text or "(no message)", error_type


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "bud-foundry"}


def _error(message: str, status: int, error_type: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": status}}


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Any, status: int, obj: Any) -> None:
    await _send(send, status, json.dumps(obj).encode(), _JSON_HEADERS)
