"""``bastion serve``: one process with the HTTP API, the OpenAI-compatible API and the web UI."""
from __future__ import annotations

import functools
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from bastion import __version__
from bastion.server import problems
from bastion.server.auth import Authenticator
from bastion.server.jobs import SyncJobs
from bastion.server.problems import Problem, problem_body
from bastion.server.warm import IndexWarmer

log = logging.getLogger("bastion.server")
UI_DIR = Path(__file__).parent / "ui"
UPLOAD_PATH_SUFFIX = "/documents"


class BastionServer:
    """What the routes share: the workspace, accounts, audit log, job runner, metrics."""

    def __init__(self, ws):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.ws = ws
        self.accounts, self.audit = ws.accounts, ws.audit
        self.auth = Authenticator(self)
        # a workspace opened with an embedder object (tests, notebooks) syncs in process: a child
        # process would build the configured embedder instead
        self.jobs = SyncJobs(ws, nice=ws.config.server.sync_nice, in_process=ws.embedder_injected)
        self.limiter = anyio.CapacityLimiter(ws.config.server.workers_threads)
        self.started = time.time()
        self.metrics = CollectorRegistry()
        self.m_requests = Counter("bastion_http_requests", "HTTP requests", ["method", "route", "status"],
                                  registry=self.metrics)
        self.m_latency = Histogram("bastion_http_request_seconds", "HTTP request latency", ["route"],
                                   buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60),
                                   registry=self.metrics)
        self.m_answers = Counter("bastion_answers", "Answers by decision", ["decision"], registry=self.metrics)
        self.m_inflight = Gauge("bastion_http_inflight_requests", "Requests being served", registry=self.metrics)
        Gauge("bastion_index_chunks", "Chunks in the index", registry=self.metrics).set_function(self._chunk_count)
        self.m_warm = Counter("bastion_index_warm_loads", "Search indexes loaded into memory (at start, after a change)",
                              ["index"], registry=self.metrics)
        self.m_warm_seconds = Gauge("bastion_index_warm_seconds", "Seconds the last load of changed indexes took",
                                    registry=self.metrics)
        self.warmer: IndexWarmer | None = None

    def _warmed(self, names: list[str], seconds: float) -> None:
        for name in names:
            self.m_warm.labels(index=name).inc()
        self.m_warm_seconds.set(seconds)

    @asynccontextmanager
    async def lifespan(self, app):
        """Keep the search indexes in memory while serving (``search.warm_check_s``; 0: off)."""
        every = self.ws.config.search.warm_check_s
        if every > 0:
            self.warmer = IndexWarmer(self.ws, every, on_warm=self._warmed)
            self.warmer.start()
        try:
            yield
        finally:
            if self.warmer is not None:
                await anyio.to_thread.run_sync(self.warmer.stop)
                self.warmer = None

    def _chunk_count(self) -> float:
        try:
            return float(self.ws.store.count())
        except Exception:  # metrics must not fail the scrape
            return float("nan")

    async def blocking(self, fn, *args, timeout: float | None = None, **kwargs):
        """Run blocking work (catalog, index, model) in a worker thread, with the request timeout."""
        limit = timeout or self.ws.config.server.request_timeout_s
        try:
            with anyio.fail_after(limit):
                return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter,
                                                      abandon_on_cancel=True)
        except TimeoutError:
            raise Problem(504, "timeout", f"no result within server.request_timeout_s = {limit:g} s") from None


class _BodyLimit:
    """Refuse bodies over the limit with 413 before they are read whole (uploads have their own limit)."""

    def __init__(self, app, json_limit: int, upload_limit: int):
        self.app, self.json_limit, self.upload_limit = app, json_limit, upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].startswith("/api/v1/sources/") and scope["path"].endswith(UPLOAD_PATH_SUFFIX)
        limit = self.upload_limit if upload else self.json_limit
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return await _send_problem(send, scope, 413, "too-large", f"request body of {declared} bytes is over the limit of {limit} bytes")
        seen = 0

        async def limited():
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


class _Observe:
    """Request id, metrics and security headers, as plain ASGI (no per-request task or body copy)."""

    def __init__(self, app, server: BastionServer):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"")[:64].decode("latin-1") or secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        path, api = scope["path"], scope["path"].startswith(("/api/", "/v1/"))
        start, status = time.perf_counter(), [500]

        async def send_with_headers(message):
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

    async def _guarded(self, scope, receive, send) -> None:
        """Answer an unexpected error here, so the 500 carries the request id and security headers."""
        started = False

        async def tracking_send(message):
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


async def _send_problem(send, scope, status: int, kind: str, detail: str) -> None:
    import json

    body = problem_body(status, kind, detail) | {"instance": scope["path"]}
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}


def create_app(ws) -> FastAPI:
    """The ASGI app serving ``ws``. ``bastion serve`` runs it under uvicorn."""
    server = BastionServer(ws)
    cfg = ws.config.server
    app = FastAPI(title="Bastion", version=__version__,
                  description="Company knowledge behind a local LLM: access-controlled search and cited answers. "
                              "Authenticate with `Authorization: Bearer <API key or OIDC token>`.",
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=server.lifespan)
    app.state.server = server
    problems.install(app)

    from bastion.server import api_native, api_openai

    app.include_router(api_native.router)
    app.include_router(api_openai.router)
    _add_api_docs(app)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: catalog and index can be read")
    async def readyz():
        def check():
            out = {}
            try:
                ws.catalog.schema_revision()
                out["catalog"] = "ok"
            except Exception:
                out["catalog"] = "unavailable"
            try:
                ws.store.count()
                out["index"] = "ok"
            except Exception:
                out["index"] = "unavailable"
            return out

        checks = await server.blocking(check, timeout=10)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not-ready", "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (admin, or public when server.metrics_public)",
             response_class=PlainTextResponse)
    async def metrics(request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not cfg.metrics_public:
            from bastion.server.auth import require

            ctx = await require("admin", "metrics")(request)
            await ctx.audit_async()
        return Response(generate_latest(server.metrics), media_type=CONTENT_TYPE_LATEST)

    if UI_DIR.is_dir() and (UI_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=UI_DIR, html=True), name="ui")

    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"], allow_headers=["authorization", "content-type"])
    app.add_middleware(_BodyLimit, json_limit=cfg.max_request_kb * 1024,
                       upload_limit=int(ws.config.ingest.max_file_mb * 2**20) + 64 * 1024)
    app.add_middleware(_Observe, server=server)
    return app


OPENAPI_PATH, DOCS_PATH = "/openapi.json", "/api/docs"


def _add_api_docs(app: FastAPI) -> None:
    """The OpenAPI spec and its Swagger UI, behind a credential like every other route."""
    from fastapi import Depends
    from fastapi.openapi.docs import get_swagger_ui_html

    from bastion.server.auth import Ctx, require

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi(ctx: Ctx = Depends(require("member", "openapi"))):
        await ctx.audit_async()
        return JSONResponse(app.openapi())

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(ctx: Ctx = Depends(require("member", "docs"))):
        await ctx.audit_async()
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} API")


def uvicorn_config(app, cfg, host: str | None = None, port: int | None = None):
    """The uvicorn settings ``bastion serve`` runs ``app`` with (``cfg``: the ``[server]`` config).

    ``proxy_headers`` is off: uvicorn would otherwise take the client address from
    ``X-Forwarded-For`` of any loopback peer; Bastion believes it only from ``server.trusted_proxies``."""
    import uvicorn

    return uvicorn.Config(app, host=host or cfg.host, port=port or cfg.port, log_level="info", timeout_keep_alive=5,
                          limit_concurrency=1024, server_header=False, proxy_headers=False)


def serve(ws, host: str | None = None, port: int | None = None) -> None:
    import uvicorn

    uvicorn.Server(uvicorn_config(create_app(ws), ws.config.server, host, port)).run()
