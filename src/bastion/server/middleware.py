"""ASGI middleware of the server: body size limits, and request ids, metrics and security headers.

Both are plain ASGI (no per-request task or body copy), and answer with problem documents.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.server import problems
from bastion.server.problems import problem_body

if TYPE_CHECKING:
    from bastion.server.app import BastionServer

UPLOAD_PATH_SUFFIX = "/documents"


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read whole (uploads have their own limit)."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self.app, self.json_limit, self.upload_limit = app, json_limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        upload = scope["method"] == "POST" and path.startswith("/api/v1/sources/") and path.endswith(UPLOAD_PATH_SUFFIX)
        limit = self.upload_limit if upload else self.json_limit
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await _send_problem(send, scope, 413, "too-large",
                                       f"request body of {declared} bytes is over the limit of {limit} bytes")
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge as exc:
            await _send_problem(send, scope, 413, "too-large", f"request body is over the limit of {exc.args[0]} bytes")


class Observe:
    """Request id, metrics and security headers, as plain ASGI (no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, server: BastionServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"")[:64].decode("latin-1") or secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        path, api = scope["path"], scope["path"].startswith(("/api/", "/v1/"))
        start, status = time.perf_counter(), [500]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = [(b"x-request-id", rid.encode("latin-1"))]
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra += [(k.encode(), v.encode()) for k, v in _SECURITY_HEADERS.items() if k.encode() not in present]
                if api and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        srv = self.server
        srv.m_inflight.inc()
        try:
            await self._guarded(scope, receive, send_with_headers)
        finally:
            srv.m_inflight.dec()
            route = scope.get("route")
            name = getattr(route, "path", None) or ("unmatched" if path.startswith(("/api", "/v1")) else "/ui")
            srv.m_requests.labels(scope["method"], name, str(status[0])).inc()
            srv.m_latency.labels(name).observe(time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an unexpected error here, so the 500 carries the request id and security headers."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # part of a response went out: nothing can replace it
                raise
            response = await problems.internal_error(Request(scope), exc)
            await response(scope, receive, send)


class _TooLarge(Exception):
    pass


async def _send_problem(send: Send, scope: Scope, status: int, kind: str, detail: str) -> None:
    body = problem_body(status, kind, detail) | {"instance": scope["path"]}
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}
