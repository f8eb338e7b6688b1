"""``bastion serve``: one process with the HTTP API, the OpenAI-compatible API and the web UI."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from bastion import __version__
from bastion.identity.schedule import scheduled_directory_sync
from bastion.server import problems
from bastion.server.auth import Authenticator
from bastion.server.jobs import SyncJobs
from bastion.server.middleware import BodyLimit, Observe
from bastion.server.problems import Problem
from bastion.server.warm import IndexWarmer

if TYPE_CHECKING:
    import uvicorn

    from bastion.core.config import ServerConfig
    from bastion.workspace import Workspace

T = TypeVar("T")
log = logging.getLogger("bastion.server")
UI_DIR = Path(__file__).parent / "ui"


class BastionServer:
    """What the routes share: the workspace, accounts, audit log, job runner, metrics."""

    def __init__(self, ws: Workspace) -> None:
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
        self.m_warm = Counter("bastion_index_warm_loads",
                              "Search indexes loaded into memory (at start, after a change)", ["index"],
                              registry=self.metrics)
        self.m_warm_seconds = Gauge("bastion_index_warm_seconds", "Seconds the last load of changed indexes took",
                                    registry=self.metrics)
        self.warmer: IndexWarmer | None = None
        from bastion.server.answer_gate import for_workspace

        self.answers = for_workspace(ws, self.metrics)  # [llm] max_concurrent / max_queue (docs/model-servers.md)

    def _warmed(self, names: list[str], seconds: float) -> None:
        for name in names:
            self.m_warm.labels(index=name).inc()
        self.m_warm_seconds.set(seconds)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Keep the search indexes in memory while serving (``search.warm_check_s``; 0: off)."""
        every = self.ws.config.search.warm_check_s
        if every > 0:
            self.warmer = IndexWarmer(self.ws, every, on_warm=self._warmed)
            self.warmer.start()
        try:
            async with scheduled_directory_sync(self.ws):  # [directory.ldap] interval (docs/directory.md)
                yield
        finally:
            if self.warmer is not None:
                await anyio.to_thread.run_sync(self.warmer.stop)
                self.warmer = None

    def _chunk_count(self) -> float:
        try:
            return float(self.ws.store.count())
        except Exception:  # noqa: BLE001 - metrics must not fail the scrape
            return float("nan")

    async def blocking(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """Run blocking work (catalog, index, model) in a worker thread, with the request timeout."""
        limit = timeout or self.ws.config.server.request_timeout_s
        try:
            with anyio.fail_after(limit):
                return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter,
                                                      abandon_on_cancel=True)
        except TimeoutError:
            raise Problem(504, "timeout", f"no result within server.request_timeout_s = {limit:g} s") from None


def create_app(ws: Workspace) -> FastAPI:
    """The ASGI app serving ``ws``. ``bastion serve`` runs it under uvicorn."""
    server = BastionServer(ws)
    cfg = ws.config.server
    app = FastAPI(title="Bastion", version=__version__,
                  description="Company knowledge behind a local LLM: access-controlled search and cited answers. "
                              "Authenticate with `Authorization: Bearer <API key or OIDC token>`.",
                  docs_url=None, redoc_url=None, openapi_url=None, lifespan=server.lifespan)
    app.state.server = server
    problems.install(app)

    from bastion.server.routes import ROUTERS

    for router in ROUTERS:
        app.include_router(router)
    if ws.config.scim.enabled:  # SCIM 2.0 provisioning (docs/scim.md; the scim extra)
        from bastion.server.routes.scim import router as scim_router

        app.include_router(scim_router)
    from bastion.server.routes import oidc  # browser single sign-on ([auth.oidc]) and the login methods

    oidc.install(app, server)
    _add_api_docs(app)
    from bastion.server.mcp import mount_mcp

    mount_mcp(app, server)  # /mcp: the MCP server (streamable HTTP), started with the app's lifespan

    @app.get("/healthz", tags=["health"], response_model=None, summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: catalog and index can be read")
    async def readyz() -> JSONResponse:
        def check() -> dict[str, str]:
            out = {}
            try:
                ws.catalog.schema_revision()
                out["catalog"] = "ok"
            except Exception:  # noqa: BLE001 - readiness reports any failure as unavailable
                out["catalog"] = "unavailable"
            try:
                ws.store.count()
                out["index"] = "ok"
            except Exception:  # noqa: BLE001 - readiness reports any failure as unavailable
                out["index"] = "unavailable"
            return out

        checks = await server.blocking(check, timeout=10)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not-ready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics (admin, or public when server.metrics_public)",
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
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
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(BodyLimit, json_limit=cfg.max_request_kb * 1024,
                       upload_limit=int(ws.config.ingest.max_file_mb * 2**20) + 64 * 1024)
    app.add_middleware(Observe, server=server)
    return app


OPENAPI_PATH, DOCS_PATH = "/openapi.json", "/api/docs"


def _add_api_docs(app: FastAPI) -> None:
    """The OpenAPI spec and its Swagger UI, behind a credential like every other route."""
    from fastapi import Depends
    from fastapi.openapi.docs import get_swagger_ui_html

    from bastion.server.auth import Ctx, require

    @app.get(OPENAPI_PATH, include_in_schema=False)
    async def openapi(ctx: Ctx = Depends(require("member", "openapi"))) -> JSONResponse:
        await ctx.audit_async()
        return JSONResponse(app.openapi())

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(ctx: Ctx = Depends(require("member", "docs"))) -> HTMLResponse:
        await ctx.audit_async()
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} API")


def uvicorn_config(app: ASGIApp, cfg: ServerConfig, host: str | None = None,
                   port: int | None = None) -> uvicorn.Config:
    """The uvicorn settings ``bastion serve`` runs ``app`` with (``cfg``: the ``[server]`` config).

    ``proxy_headers`` is off: uvicorn would otherwise take the client address from
    ``X-Forwarded-For`` of any loopback peer; Bastion believes it only from ``server.trusted_proxies``."""
    import uvicorn

    return uvicorn.Config(app, host=host or cfg.host, port=port or cfg.port, log_level="info", timeout_keep_alive=5,
                          limit_concurrency=1024, server_header=False, proxy_headers=False)


def serve(ws: Workspace, host: str | None = None, port: int | None = None) -> None:
    from bastion.server.bridge import BridgedServer

    app = create_app(ws)
    BridgedServer(uvicorn_config(app, ws.config.server, host, port), app, ws).run()
