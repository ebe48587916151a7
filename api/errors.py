"""Every error leaves the API as JSON {error: {code, message, details}}; bad input is never a 500.

The one place domain errors (control/errors.py) become HTTP: Conflict is 409 with details {field, ...},
Invalid is 422 with details [{field, message}] (one per problem), NotFound-style lookups stay ApiError 404.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from temporalio.service import RPCError, RPCStatusCode

from core.logging import get_logger
from control.errors import Conflict, DomainError, Invalid

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "payload_too_large", 422: "validation_error", 431: "headers_too_large",
          500: "internal_error", 503: "unavailable"}
log = get_logger(__name__)
RETRY_AFTER_S = 5  # what a client is told to wait while the database or Temporal is unreachable

# The database unreachable or going away mid-request: the request is fine, the platform is not (yet) able to serve
# it. The pool reconnects by itself, so the answer is 503 with Retry-After, never a 500.
DATABASE_OUTAGES = (ConnectionError, TimeoutError, asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.InterfaceError,
                    asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.TooManyConnectionsError,
                    asyncpg.exceptions.AdminShutdownError)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The shape of every error the API answers."""

    error: ErrorDetail


def _documented(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# What any operation may answer besides its success, documented on every route so a schema-driven client sees no
# surprise: the request bounds (api/limits.py), authentication and roles (api/deps.py), domain errors, outages.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("malformed request"),
    401: _documented("missing, unknown, revoked or expired token"),
    403: _documented("the token's role does not allow this"),
    404: _documented("no such resource for this token's project"),
    409: _documented("conflicts with the resource's current state"),
    413: _documented("request body over the limit"),
    422: _documented("invalid request: details name each field"),
    431: _documented("request headers over the limit"),
    503: _documented("the database or the workflow service is unreachable; retry after Retry-After seconds"),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.code = code or _CODES.get(status, "error")


def not_found(kind: str, ident: object) -> ApiError:
    return ApiError(404, f"{kind} {ident} not found")


def from_domain(error: DomainError) -> ApiError:
    if isinstance(error, Invalid):
        return ApiError(422, error.message, [{"field": error.field, "message": problem, **error.details}
                                             for problem in error.problems])
    details = ({"field": error.field} if error.field else {}) | error.details
    return ApiError(409 if isinstance(error, Conflict) else 400, error.message, details or None)


def error_body(status: int, message: str, details: Any = None, code: str | None = None) -> dict:
    return {"error": {"code": code or _CODES.get(status, "error"), "message": message, "details": details}}


def _field_path(loc: tuple) -> str:
    # ("body", "gpus", 0, "gpu_type") -> "gpus.0.gpu_type"; query/path parameters keep their own name.
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "body")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.status, exc.message, exc.details, exc.code), exc.status, headers=headers)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return await _api_error(request, from_domain(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": _field_path(tuple(err.get("loc", ()))), "message": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return JSONResponse(error_body(422, f"invalid request: {summary}", details), 422)

    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, _database_unavailable)
    app.add_exception_handler(RPCError, _temporal_unavailable)
    app.add_exception_handler(Exception, _internal_error)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
        return JSONResponse(error_body(exc.status_code, message), exc.status_code, headers=headers or None)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path: the 405's Allow header (RFC 9110). The router names
    only the first route that matched the path, and one path often has a route per method."""
    return [method for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)]


def _unavailable(message: str) -> JSONResponse:
    return JSONResponse(error_body(503, message), 503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", error=type(exc).__name__)
    return _unavailable("the database is unavailable; retry shortly")


async def _temporal_unavailable(request: Request, exc: RPCError) -> JSONResponse:
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED):
        log.warning("temporal unavailable", status=exc.status.name)
        return _unavailable("the workflow service is unavailable; retry shortly")
    return await _internal_error(request, exc)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """The last resort: a bug, reported as JSON like every other error (the traceback goes to the log)."""
    log.error("unhandled error", error=type(exc).__name__, exc_info=exc)
    return JSONResponse(error_body(500, "internal error; the platform's log has the details"), 500)
