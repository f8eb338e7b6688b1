"""Errors as RFC 9457 ``application/problem+json`` with a stable ``type`` per kind of problem.

Routes under ``/v1`` (the OpenAI-compatible API) also carry OpenAI's ``error`` object, so
OpenAI clients show the message.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bastion.core.errors import (
    AccessError,
    AuthError,
    BastionError,
    ConfigError,
    GenerationError,
    LLMUnavailable,
    ModelError,
    WorkspaceError,
)

log = logging.getLogger("bastion.server")
PROBLEM_JSON = "application/problem+json"
INTERNAL_DETAIL = "internal error; the server log has the details"

TITLES = {
    "unauthenticated": "Authentication required",
    "forbidden": "Forbidden",
    "csrf": "Missing or wrong CSRF token",
    "not-found": "Not found",
    "bad-request": "Bad request",
    "validation": "Invalid request",
    "too-large": "Request too large",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "locked": "Too many failed logins",
    "timeout": "The request took too long",
    "unavailable": "A backend is unavailable",
    "audit-unavailable": "The audit log cannot be written",
    "internal": "Internal error",
}


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, kind: str, detail: str, *, headers: dict | None = None,
                 extra: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail
        self.headers, self.extra = headers or {}, extra or {}


def problem_body(status: int, kind: str, detail: str, request: Request | None = None,
                 extra: dict | None = None) -> dict:
    body = {"type": f"urn:bastion:problem:{kind}", "title": TITLES.get(kind, kind), "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        rid = getattr(request.state, "request_id", None)
        if rid:
            body["request_id"] = rid
        if request.url.path.startswith("/v1/"):
            body["error"] = {"message": detail, "type": kind, "code": status}
    return body | (extra or {})


def problem_response(request: Request | None, status: int, kind: str, detail: str, headers: dict | None = None,
                     extra: dict | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, kind, detail, request, extra), status_code=status,
                        media_type=PROBLEM_JSON, headers=headers)


def from_bastion_error(exc: BastionError) -> Problem:
    """The problem a :class:`BastionError` answers with (an unexpected kind: a bare 500, logged)."""
    if isinstance(exc, AuthError):
        return Problem(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, LLMUnavailable):
        return Problem(503, "unavailable", str(exc))
    if isinstance(exc, ModelError):
        return Problem(503, "unavailable", str(exc))
    if isinstance(exc, (ConfigError, AccessError, WorkspaceError)):
        return Problem(400, "bad-request", str(exc))
    if isinstance(exc, GenerationError):
        return Problem(502, "unavailable", str(exc))
    log.error("unexpected %s: %s", type(exc).__name__, exc, exc_info=exc)
    return Problem(500, "internal", INTERNAL_DETAIL)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        await audit_failure(request, exc.status)
        return problem_response(request, exc.status, exc.kind, exc.detail, exc.headers, exc.extra)

    @app.exception_handler(BastionError)
    async def _bastion(request: Request, exc: BastionError) -> JSONResponse:
        p = from_bastion_error(exc)
        await audit_failure(request, p.status)
        return problem_response(request, p.status, p.kind, p.detail, p.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors()]
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        await audit_failure(request, 422)
        return problem_response(request, 422, "validation", where or "invalid request", extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed", 413: "too-large", 401: "unauthenticated",
                403: "forbidden"}.get(exc.status_code, "bad-request")
        await audit_failure(request, exc.status_code)
        return problem_response(request, exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    app.add_exception_handler(Exception, internal_error)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected error: logged with its traceback, audited (outcome ``error``), and answered with a
    bare 500 that says nothing about it."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    await audit_failure(request, 500)
    return problem_response(request, 500, "internal", INTERNAL_DETAIL)


def _outcome(status: int) -> str:
    if status >= 500:
        return "error"
    return "denied" if status in (401, 403, 404) else "failed"


async def audit_failure(request: Request, status: int) -> None:
    """A failed request leaves an audit entry: outcome ``denied`` (401/403/404), ``failed`` (other 4xx) or
    ``error`` (5xx). An authenticated route writes its own entry unless it already wrote one (a 500 is
    recorded even then); a server error before authentication is recorded with no actor."""
    ctx = getattr(request.state, "ctx", None)
    try:
        if ctx is not None and (not ctx.audited or status == 500):
            await ctx.audit_async(_outcome(status), detail={"status": status})
        elif ctx is None and status >= 500:
            await _audit_anonymous(request, status)
    except Exception:  # the failure response goes out anyway; nothing was read
        log.exception("audit write failed for a failed request")


async def _audit_anonymous(request: Request, status: int) -> None:
    import anyio

    from bastion.server.auth import client_ip

    server = request.app.state.server
    ip = client_ip(request, server.ws.config.server.trusted_proxies)
    rid = getattr(request.state, "request_id", None)
    await anyio.to_thread.run_sync(lambda: server.audit.record(
        actor=None, via="none", action="request", outcome=_outcome(status), target=request.url.path, ip=ip,
        request_id=rid, detail={"status": status, "method": request.method}))
