"""Browser single sign-on with OpenID Connect: ``/auth/oidc/login``, ``/auth/oidc/callback``,
``/auth/oidc/logout``, and ``/auth/methods`` (how the login page offers to sign in).

A successful callback creates the same web session (cookie + CSRF token) as the password login;
every refusal shows a page saying why, writes a ``login`` audit entry with outcome ``denied``,
and creates no session.
"""
from __future__ import annotations

import html
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bastion.core.errors import AccessError
from bastion.server.auth import SESSION_COOKIE, _trusted, client_ip, request_scheme
from bastion.server.oidc import OidcClient, SsoRefused
from bastion.server.oidc_users import admit, map_identity
from bastion.server.routes.common import JsonObject

if TYPE_CHECKING:
    from bastion.server.app import BastionServer

FLOW_COOKIE = "bastion_oidc_flow"  # the sign-in in progress (state, nonce, PKCE verifier), signed
SSO_COOKIE = "bastion_oidc"  # marks a session made by single sign-on: logout then visits the provider
CALLBACK_PATH = "/auth/oidc/callback"

router = APIRouter(tags=["auth"])


def install(app: FastAPI, server: BastionServer) -> None:
    """Mount the routes; with ``[auth.oidc]`` configured, build its client now so that a missing
    secret or extra stops the server at start with a clear error."""
    cfg = server.ws.config.auth.oidc
    app.state.oidc = OidcClient(cfg, server.ws.home, server.ws.catalog) if cfg is not None else None
    app.include_router(router)


def _client(request: Request) -> OidcClient:
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    if client is None:
        raise SsoRefused("single sign-on is not configured on this server ([auth.oidc] in bastion.toml)",
                         "not-configured", 404)
    return client


def _origin(request: Request, server: BastionServer) -> str:
    """``scheme://host`` as the browser sees this server (behind a trusted proxy: its forwarded values)."""
    trusted = server.ws.config.server.trusted_proxies
    host = request.headers.get("host") or request.url.netloc
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[-1].strip()
    if forwarded and _trusted(request.client.host if request.client else None, trusted):
        host = forwarded
    return f"{request_scheme(request, trusted)}://{host}"


def _secure(request: Request, server: BastionServer) -> bool:
    secure = server.ws.config.auth.cookie_secure
    if secure is None:
        secure = request_scheme(request, server.ws.config.server.trusted_proxies) == "https"
    return secure


def _page(title: str, text: str, status: int) -> HTMLResponse:
    body = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Bastion'
            '</title><meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="stylesheet" href="/app.css"></head><body><main class="view view-login">'
            f'<div class="card login-card" role="alert"><h1>{html.escape(title)}</h1>'
            f'<p id="sso-error">{html.escape(text)}</p><p><a href="/">Back to sign-in</a></p></div></main>'
            '</body></html>')
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _audit(server: BastionServer, request: Request, outcome: str, *, user: str | None,
           action: str = "login", detail: dict | None = None) -> None:
    server.audit.record(actor=user, via="oidc", action=action, outcome=outcome,
                        ip=client_ip(request, server.ws.config.server.trusted_proxies),
                        request_id=getattr(request.state, "request_id", None), detail=detail or {})


async def _refused(server: BastionServer, request: Request, exc: SsoRefused) -> HTMLResponse:
    if exc.reason != "not-configured":  # a sign-in that was attempted, not a stray visit
        await server.blocking(_audit, server, request, "denied", user=exc.user,
                              detail={"reason": exc.reason, "message": str(exc)[:500]})
    response = _page("Sign-in refused", str(exc), exc.status)
    response.delete_cookie(FLOW_COOKIE, path="/auth/oidc")
    return response


@router.get("/auth/methods", response_model=None, include_in_schema=False)
async def methods(request: Request) -> JsonObject:
    """How the web UI's login page offers to sign in (public: it is shown before anyone has)."""
    cfg = request.app.state.server.ws.config.auth.oidc
    if cfg is None:
        return {"password": True, "sso": None}
    return {"password": cfg.password_login, "sso": {"label": cfg.label, "login_url": "/auth/oidc/login",
                                                     "logout_url": "/auth/oidc/logout"}}


@router.get("/auth/oidc/login", include_in_schema=False)
async def login(request: Request) -> Response:
    server: BastionServer = request.app.state.server
    try:
        client = _client(request)
        redirect_url = client.cfg.redirect_url or _origin(request, server) + CALLBACK_PATH
        url, flow = await server.blocking(client.begin, redirect_url)
    except SsoRefused as exc:
        return await _refused(server, request, exc)
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    # Lax, not Strict: the provider sends the browser back with a top-level GET from its own site
    response.set_cookie(FLOW_COOKIE, flow, max_age=600, httponly=True, secure=_secure(request, server),
                        samesite="lax", path="/auth/oidc")
    return response


@router.get(CALLBACK_PATH, include_in_schema=False)
async def callback(request: Request) -> Response:
    server: BastionServer = request.app.state.server
    params = {k: v[:4000] for k, v in request.query_params.items()}
    try:
        client = _client(request)
        claims = await server.blocking(client.finish, params, request.cookies.get(FLOW_COOKIE))
        who = map_identity(client.cfg, claims)
        user = await server.blocking(admit, server.ws, client.cfg, who)
        try:
            principal = await server.blocking(server.ws.principal, user)
        except AccessError as exc:
            raise SsoRefused(f"{user} cannot sign in: {exc}", "disabled-user", user=user) from None
    except SsoRefused as exc:
        return await _refused(server, request, exc)
    hours = server.ws.config.auth.session_hours
    ip = client_ip(request, server.ws.config.server.trusted_proxies)
    token, _csrf = await server.blocking(server.accounts.create_session, user, timedelta(hours=hours), ip)
    await server.blocking(_audit, server, request, "ok", user=user,
                          detail={"subject": who.subject[:200], "groups": sorted(principal.groups),
                                  "role": await server.blocking(server.accounts.role, user)})
    response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
    secure = _secure(request, server)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(hours * 3600), httponly=True, secure=secure,
                        samesite="strict", path="/")
    response.set_cookie(SSO_COOKIE, "1", max_age=int(hours * 3600), httponly=True, secure=secure,
                        samesite="strict", path="/auth/oidc")
    response.delete_cookie(FLOW_COOKIE, path="/auth/oidc")
    return response


@router.get("/auth/oidc/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """End the web session (if the browser still has one), then sign out at the provider when the
    session came from single sign-on and the provider offers RP-initiated logout."""
    server: BastionServer = request.app.state.server
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        found = await server.blocking(server.accounts.session, token)
        await server.blocking(server.accounts.end_session, token)
        if found is not None:
            await server.blocking(_audit, server, request, "ok", user=found[0], action="logout")
    target = "/"
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    if client is not None and request.cookies.get(SSO_COOKIE):
        base = _origin(request, server)
        if client.cfg.redirect_url:
            parts = urlsplit(client.cfg.redirect_url)
            base = f"{parts.scheme}://{parts.netloc}"
        at_provider: str | None = await server.blocking(client.logout_url, base + "/")
        target = at_provider or "/"
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(SSO_COOKIE, path="/auth/oidc")
    return response
