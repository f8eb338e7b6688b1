"""Bastion as an MCP server: ``search``, ``ask`` and ``get_document`` for agents and desktop clients.

Both transports share the tools here: ``/mcp`` of ``bastion serve`` (streamable HTTP, see
:func:`mount_mcp`) and ``bastion mcp`` (stdio, :mod:`bastion.cli.mcp`). A tool call runs as one
authenticated user, through the same functions as the HTTP API's routes (the same ACL pre-filter,
answerer, audit entries and worker threads), so an agent sees exactly what its user may read.
A document the user may not read answers like one that does not exist.

Needs the ``mcp`` extra (``pip install 'bastion[mcp]'``).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Request
from pydantic import Field
from starlette.types import Receive, Scope, Send

from bastion import __version__
from bastion.core.errors import BastionError
from bastion.server.answer_gate import uses_llm
from bastion.server.app import BastionServer
from bastion.server.auth import Ctx, Identity
from bastion.server.problems import INTERNAL_DETAIL, Problem, audit_failure, from_bastion_error, problem_response
from bastion.server.routes.ask import answer_dict, run_ask
from bastion.server.routes.common import AuditEntry, JsonObject, blocking_audited
from bastion.server.routes.knowledge import _document_with_passages, empty_index_note

try:  # the mcp extra; without it build_mcp says how to install it (and bastion serve has no /mcp)
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
except ImportError:  # pragma: no cover - the test extra installs it
    HAVE_MCP = False
else:
    HAVE_MCP = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from bastion.workspace import Workspace

log = logging.getLogger("bastion.server")
MCP_PATH = "/mcp"
IDENTITY_STATE = "mcp_identity"  # where the HTTP endpoint leaves the caller's Identity in the request state
INSTALL_HINT = "the MCP server needs the mcp extra: pip install 'bastion[mcp]'"
ANSWER_FIELDS = ("answer", "decision", "reason", "message", "citations", "lineage_id", "language", "model", "warnings")

# The authenticated caller of one tool call, as a Ctx whose audit entry names ``action``.
Caller = Callable[["Context", str], Awaitable[Ctx]]


def build_mcp(server: BastionServer, caller: Caller) -> MCPServer:
    """The MCP server with Bastion's tools; ``caller`` says who calls (per transport)."""
    if not HAVE_MCP:
        raise BastionError(INSTALL_HINT)

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        mcp: MCPServer = MCPServer("bastion", title="Bastion", version=__version__, instructions=INSTRUCTIONS)
    finally:  # the SDK configures the root logger on construction; the host process owns logging
        root.handlers[:] = handlers
        root.setLevel(level)
    reads = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)

    async def call(context: Context, action: str, work: Callable[[Ctx], Awaitable[JsonObject]]) -> JsonObject:
        """Run one tool call as its caller; every failure is a plain tool error, audited like the API's."""
        ctx: Ctx | None = None
        try:
            ctx = await caller(context, action)
            ctx.request.state.ctx = ctx  # what audit_failure records a failure with
            return await work(ctx)
        except Problem as p:
            problem = p
        except BastionError as exc:
            problem = from_bastion_error(exc)
        except Exception:
            log.exception("MCP tool %s failed", action)
            problem = Problem(500, "internal", INTERNAL_DETAIL)
        if ctx is not None:
            await audit_failure(ctx.request, problem.status)
        raise ToolError(problem.detail)

    @mcp.tool(annotations=reads)
    async def search(query: Annotated[str, Field(min_length=1, max_length=4000, description="What to look for")],
                     context: Context,
                     k: Annotated[int, Field(ge=1, le=100, description="How many passages")] = 10) -> JsonObject:
        """Hybrid (keyword + meaning) search over the documents you may read. Returns passages with their
        document's title (`document`), `doc_id`, `path`, `page`, `section`, `score` and `text`."""
        return await call(context, "search", lambda ctx: _search(ctx, query, k))

    @mcp.tool(annotations=reads)
    async def ask(question: Annotated[str, Field(min_length=1, max_length=4000, description="The question")],
                  context: Context) -> JsonObject:
        """A checked answer from the documents you may read, with numbered citations ([1] in `answer`) that
        quote their passages. `decision` is `answered`, `extracted` (quotes only) or `abstained` (the
        documents do not answer it); `lineage_id` identifies the answer in Bastion's audit log."""
        return await call(context, "ask", lambda ctx: _ask(ctx, question))

    @mcp.tool(annotations=reads)
    async def get_document(doc_id: Annotated[str, Field(min_length=1, max_length=64,
                                                        description="A doc_id from search or ask")],
                           context: Context) -> JsonObject:
        """One document you may read: its title, path, source, current version and its passages in order."""
        return await call(context, "documents.get", lambda ctx: _document(ctx, doc_id))

    return mcp


INSTRUCTIONS = ("Bastion searches and answers from company documents, as the user this connection authenticated "
                "as: it only ever returns what that user may read. Use `search` to find passages, `ask` for a "
                "cited answer, `get_document` to read a document found by either.")


async def _search(ctx: Ctx, query: str, k: int) -> JsonObject:
    hits = await blocking_audited(
        ctx, lambda: ctx.server.ws.search(query, ctx.principal, k),
        entry=lambda hits: AuditEntry(target=query, detail={"k": k, "hits": [h.chunk_id for h in hits]}))
    keep = ("chunk_id", "doc_id", "document", "path", "source", "page", "section", "score", "text")
    out: JsonObject = {"hits": [{f: h.to_dict()[f] for f in keep} for h in hits], "message": None}
    if not hits:
        out["message"] = await ctx.server.blocking(empty_index_note, ctx, None, "en")
    return out


async def _ask(ctx: Ctx, question: str) -> JsonObject:
    ticket = ctx.server.answers.admit("", llm=uses_llm(ctx.server.ws, "bastion", None))
    ans = await ticket.run(run_ask, ctx, question, assistant="bastion", mode=None, history=[])
    full = answer_dict(ans)
    return {f: full.get(f) for f in ANSWER_FIELDS}


async def _document(ctx: Ctx, doc_id: str) -> JsonObject:
    return await blocking_audited(ctx, lambda: _document_with_passages(ctx, doc_id), target=doc_id,
                                  entry=lambda doc: AuditEntry(detail={"chunks": len(doc["passages"])}))


async def _http_caller(context: Context, action: str) -> Ctx:
    """The caller :class:`McpEndpoint` authenticated for the HTTP request that carried this call."""
    request = context.request_context.request
    identity = getattr(request.state, IDENTITY_STATE, None) if isinstance(request, Request) else None
    if not isinstance(request, Request) or not isinstance(identity, Identity):
        raise Problem(401, "unauthenticated", "send 'Authorization: Bearer <API key or token>'")
    server = request.app.state.server
    return Ctx(identity, request, action, server, detail={"transport": "mcp-http"})


class McpEndpoint:
    """``/mcp``: authenticates every request like the API (bearer API key or JWT), then hands it to the
    MCP SDK's streamable HTTP transport. Stateless: each request carries its credential and nothing of one
    caller's session can be reused by another; replicas need no shared state."""

    def __init__(self, server: BastionServer) -> None:
        self.server = server
        self.mcp: MCPServer | None = None
        self.unavailable: str | None = None
        try:
            self.mcp = build_mcp(server, _http_caller)
        except BastionError as exc:
            self.unavailable = str(exc)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The MCP session manager, for as long as the app's lifespan (a fresh one each time it starts)."""
        if self.mcp is None:
            yield
            return
        from mcp.server.transport_security import TransportSecuritySettings

        # every request needs a bearer credential, which a browser does not send across origins:
        # the SDK's Host/Origin allow-list (for unauthenticated local servers) would only break proxies
        self.mcp.streamable_http_app(stateless_http=True, json_response=True,
                                     transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        async with self.mcp.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if self.mcp is None:
            return await problem_response(request, 404, "not-found", self.unavailable or INSTALL_HINT)(scope, receive, send)
        if not request.headers.get("authorization"):  # a web session cookie does not reach the tools
            response = problem_response(request, 401, "unauthenticated", "send 'Authorization: Bearer <API key or "
                                        "token>'", headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        try:
            identity = await self.server.blocking(self.server.auth.identify, request)
        except Problem as p:
            return await problem_response(request, p.status, p.kind, p.detail, p.headers)(scope, receive, send)
        setattr(request.state, IDENTITY_STATE, identity)
        await self.mcp.session_manager.handle_request(scope, receive, send)


def mount_mcp(app: FastAPI, server: BastionServer) -> None:
    """Serve MCP at ``/mcp`` of ``app``, its session manager running within the app's lifespan."""
    from starlette.routing import Route

    endpoint = McpEndpoint(server)
    app.router.routes.append(Route(MCP_PATH, endpoint, methods=["GET", "POST", "DELETE"]))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state, endpoint.running():
            yield state

    app.router.lifespan_context = lifespan


class LocalServer(BastionServer):
    """What the tools need of a :class:`BastionServer` in a process that serves MCP over stdio: the
    workspace, its accounts and audit log, the authenticator and the worker threads. It starts no HTTP
    server and no sync jobs, and leaves the jobs of a ``bastion serve`` of the same workspace alone."""

    def __init__(self, ws: Workspace) -> None:  # deliberately not BastionServer's (see above)
        import anyio
        from prometheus_client import CollectorRegistry, Counter

        from bastion.server.auth import Authenticator

        self.ws = ws
        self.accounts, self.audit = ws.accounts, ws.audit
        self.auth = Authenticator(self)
        self.limiter = anyio.CapacityLimiter(ws.config.server.workers_threads)
        self.m_answers = Counter("bastion_answers", "Answers by decision", ["decision"], registry=CollectorRegistry())


def local_request(authorization: str | None = None) -> Request:
    """A stand-in for the HTTP request of one stdio tool call: the audit entry takes its request id
    from it (no client address), and :meth:`Authenticator.identify` reads the credential from it."""
    import secrets

    headers = [(b"authorization", authorization.encode("latin-1"))] if authorization else []
    return Request({"type": "http", "method": "POST", "path": MCP_PATH, "raw_path": MCP_PATH.encode(),
                    "query_string": b"", "headers": headers, "client": None, "server": None, "scheme": "http",
                    "state": {"request_id": secrets.token_hex(8)}})


def key_caller(server: BastionServer, key: str) -> Caller:
    """Each call as the owner of API key (or OIDC token) ``key``, checked again on every call as over HTTP:
    a revoked or expired key, or a disabled user, stops working at once."""

    async def caller(context: Context, action: str) -> Ctx:
        request = local_request(f"Bearer {key}")
        identity = await server.blocking(server.auth.identify, request)
        return Ctx(identity, request, action, server, detail={"transport": "mcp-stdio"})

    return caller


def user_caller(server: BastionServer, user_id: str, os_user: str) -> Caller:
    """Each call as ``user_id``, named by the operating-system user ``os_user`` who runs the process (their
    current groups and role, looked up on every call; a disabled or removed user is refused)."""

    def identify() -> Identity:
        try:
            principal = server.ws.principal(user_id)
        except BastionError as exc:
            raise Problem(401, "unauthenticated", str(exc)) from None
        return Identity(user_id, principal, server.accounts.role(user_id), "local")

    async def caller(context: Context, action: str) -> Ctx:
        identity = await server.blocking(identify)
        return Ctx(identity, local_request(), action, server, detail={"transport": "mcp-stdio", "os_user": os_user})

    return caller
