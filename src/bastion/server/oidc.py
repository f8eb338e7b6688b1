"""The OpenID Connect relying party behind browser single sign-on (``[auth.oidc]``).

Authorization code flow with PKCE (S256), ``state`` and ``nonce``: :meth:`OidcClient.begin` makes the
provider's authorization URL and the login cookie that carries the flow's secrets (HMAC-signed,
ten minutes); :meth:`OidcClient.finish` checks the callback against that cookie, exchanges the code,
validates the ID token (signature against the provider's JWKS, issuer, audience, expiry, nonce) and
returns the claims, merged with the userinfo endpoint's. Any failure raises :class:`SsoRefused`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.core.config import JwtConfig, OidcConfig
from bastion.core.errors import AccessError, ConfigError
from bastion.leases import claim_once

if TYPE_CHECKING:
    from bastion.catalog.db import Catalog

FLOW_TTL_S = 600  # a sign-in must come back from the provider within ten minutes
DISCOVERY_TTL_S = 3600


class SsoRefused(AccessError):
    """A single sign-on attempt that must not create a session: ``reason`` goes to the audit log,
    the message to the person signing in."""

    def __init__(self, message: str, reason: str, status: int = 403, user: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.status, self.user = reason, status, user


@dataclass(frozen=True)
class ProviderMetadata:
    """What discovery says about the provider (``.well-known/openid-configuration``)."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OidcClient:
    """One configured provider; thread-safe (the routes call it from worker threads)."""

    def __init__(self, cfg: OidcConfig, home: Path, catalog: Catalog | None = None) -> None:
        try:
            from authlib.integrations.httpx_client import OAuth2Client
        except ImportError:
            raise ConfigError("auth.oidc needs the oidc extra: pip install 'bastion[oidc]'") from None
        self.cfg, self._oauth_class = cfg, OAuth2Client
        self.client_secret = self._secret(cfg, home)
        key = os.environ.get(cfg.state_key_env, "") if cfg.state_key_env else secrets.token_urlsafe(32)
        if len(key) < 16:
            raise ConfigError(f"auth.oidc.state_key_env: environment variable {cfg.state_key_env!r} must hold a "
                              "random key of at least 16 characters (the same on every replica)")
        self._key = key.encode()
        self._lock = threading.Lock()
        self._meta: ProviderMetadata | None = None
        self._meta_at = 0.0
        self._validator: Any = None
        self._used: dict[str, float] = {}  # state -> expiry: a login cookie works once
        self.catalog = catalog  # with one, once on every server of the catalog (bastion.leases)

    @staticmethod
    def _secret(cfg: OidcConfig, home: Path) -> str | None:
        if cfg.client_secret_env:
            value = os.environ.get(cfg.client_secret_env)
            if not value:
                raise ConfigError(f"auth.oidc.client_secret_env: environment variable {cfg.client_secret_env!r} "
                                  "is not set; export the client secret there")
            return value
        if cfg.client_secret_file:
            path = (home / cfg.client_secret_file).resolve()
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"auth.oidc.client_secret_file {str(path)!r}: cannot read it ({exc})") from None
            if not value:
                raise ConfigError(f"auth.oidc.client_secret_file {str(path)!r} is empty")
            return value
        return None  # a public client: PKCE alone

    def _oauth(self, redirect_url: str) -> Any:
        return self._oauth_class(client_id=self.cfg.client_id, client_secret=self.client_secret,
                                 scope=" ".join(self.cfg.scopes), redirect_uri=redirect_url,
                                 code_challenge_method="S256", timeout=self.cfg.timeout_s)

    # -- discovery -------------------------------------------------------------------------------
    def metadata(self) -> ProviderMetadata:
        """The provider's endpoints (cached for an hour); raises SsoRefused when it cannot be read."""
        with self._lock:
            if self._meta is not None and time.monotonic() - self._meta_at < DISCOVERY_TTL_S:
                return self._meta
        issuer = self.cfg.issuer
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            with self._oauth("") as http:
                response = http.request("GET", url, withhold_token=True)
            response.raise_for_status()
            doc = response.json()
        except Exception as exc:  # noqa: BLE001 - any network or format failure reads the same to the user
            raise SsoRefused(f"the identity provider cannot be reached ({url}: {exc})", "provider-unreachable",
                             503) from None
        if not isinstance(doc, dict) or doc.get("issuer") != issuer:
            found = doc.get("issuer") if isinstance(doc, dict) else None
            raise SsoRefused(f"the identity provider's discovery document names issuer {found!r}, not the "
                             f"configured auth.oidc.issuer {issuer!r}", "provider-misconfigured", 503)
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not doc.get(k)]
        methods = doc.get("code_challenge_methods_supported")
        if missing or (isinstance(methods, list) and "S256" not in methods):
            why = f"lacks {', '.join(missing)}" if missing else "does not support PKCE with S256"
            raise SsoRefused(f"the identity provider's discovery document {why}", "provider-misconfigured", 503)
        meta = ProviderMetadata(doc["authorization_endpoint"], doc["token_endpoint"], doc["jwks_uri"],
                                doc.get("userinfo_endpoint"), doc.get("end_session_endpoint"))
        from bastion.server.tokens import JwtValidator

        validator = JwtValidator(JwtConfig(jwks_url=meta.jwks_uri, issuer=issuer, audience=self.cfg.client_id,
                                           algorithms=self.cfg.algorithms, user_claim="sub", groups_claim=None,
                                           leeway_s=self.cfg.leeway_s), Path("."))
        with self._lock:
            self._meta, self._meta_at, self._validator = meta, time.monotonic(), validator
        return meta

    # -- the login cookie ------------------------------------------------------------------------
    def _sign(self, payload: dict) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())}"

    def read_flow(self, cookie: str | None) -> dict:
        """The flow a login cookie carries, if this server signed it and it is fresh."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 4000:
            raise SsoRefused("the sign-in cookie is missing: start the sign-in again from the login page "
                             "(cookies must be allowed for this site)", "no-login-cookie", 400)
        body, mac = cookie.split(".")
        good = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, mac):
            raise SsoRefused("the sign-in cookie is not valid: start the sign-in again", "bad-login-cookie", 400)
        flow = json.loads(_unb64(body))
        if not isinstance(flow, dict) or time.time() - float(flow.get("t", 0)) > FLOW_TTL_S:
            raise SsoRefused("the sign-in took too long: start it again", "login-expired", 400)
        return flow

    def begin(self, redirect_url: str) -> tuple[str, str]:
        """The provider URL to send the browser to, and the login cookie's value."""
        meta = self.metadata()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        with self._oauth(redirect_url) as oauth:
            url, _ = oauth.create_authorization_url(meta.authorization_endpoint, state=state, code_verifier=verifier,
                                                    nonce=nonce)
        cookie = self._sign({"s": state, "n": nonce, "v": verifier, "r": redirect_url, "t": time.time()})
        return url, cookie

    # -- the callback ----------------------------------------------------------------------------
    def finish(self, params: dict[str, str], cookie: str | None) -> dict[str, Any]:
        """The signed-in person's claims (ID token, then userinfo for what it lacks)."""
        flow = self.read_flow(cookie)
        state = params.get("state") or ""
        if not hmac.compare_digest(state.encode(), str(flow.get("s", "")).encode()):
            raise SsoRefused("the sign-in response does not belong to this browser's sign-in (state mismatch); "
                             "start the sign-in again", "state-mismatch", 400)
        if params.get("error"):
            text = (params.get("error_description") or params["error"])[:300]
            raise SsoRefused(f"the identity provider refused the sign-in: {text}", "provider-error", 403)
        if "iss" in params and params["iss"] != self.cfg.issuer:  # RFC 9207: a mixed-up provider
            raise SsoRefused("the sign-in response comes from another issuer", "issuer-mismatch", 400)
        self._claim_state(state)
        meta = self.metadata()
        tokens = self._exchange(meta, params.get("code") or "", flow)
        claims = self._id_token_claims(tokens.get("id_token"), str(flow.get("n", "")))
        if self.cfg.userinfo and meta.userinfo_endpoint and tokens.get("access_token"):
            extra = self._userinfo(meta.userinfo_endpoint, tokens["access_token"], str(flow.get("r", "")))
            if extra.get("sub") != claims["sub"]:
                raise SsoRefused("the provider's userinfo is about another subject", "userinfo-mismatch")
            claims = {**extra, **claims}
        return claims

    def _claim_state(self, state: str) -> None:
        now = time.time()
        with self._lock:
            self._used = {s: t for s, t in self._used.items() if t > now}
            if state in self._used:
                raise SsoRefused("this sign-in response was already used; start the sign-in again", "replayed", 400)
            self._used[state] = now + FLOW_TTL_S
        if self.catalog is not None and not claim_once(self.catalog, f"oidc-state:{state}", FLOW_TTL_S):
            raise SsoRefused("this sign-in response was already used; start the sign-in again", "replayed", 400)

    def _exchange(self, meta: ProviderMetadata, code: str, flow: dict) -> dict:
        if not code:
            raise SsoRefused("the sign-in response carries no authorization code", "no-code", 400)
        try:
            with self._oauth(str(flow.get("r", ""))) as oauth:
                token = oauth.fetch_token(meta.token_endpoint, grant_type="authorization_code", code=code,
                                          code_verifier=str(flow.get("v", "")))
        except Exception as exc:  # noqa: BLE001 - authlib's OAuthError or a network error
            error = getattr(exc, "error", None)
            if error:
                detail = getattr(exc, "description", None) or error
                raise SsoRefused(f"the identity provider did not accept the sign-in code ({detail})",
                                 "code-rejected", 403) from None
            raise SsoRefused(f"the identity provider cannot be reached ({exc})", "provider-unreachable", 503) from None
        return dict(token)

    def _id_token_claims(self, id_token: object, nonce: str) -> dict[str, Any]:
        if not isinstance(id_token, str) or not id_token:
            raise SsoRefused("the identity provider sent no ID token (is 'openid' among the scopes?)", "no-id-token")
        try:
            claims = self._validator.validate(id_token)
        except AccessError as exc:
            raise SsoRefused(f"the ID token is not acceptable: {exc}", "bad-id-token") from None
        except Exception as exc:  # noqa: BLE001 - the JWKS cannot be fetched
            raise SsoRefused(f"the identity provider's keys cannot be read ({exc})", "provider-unreachable",
                             503) from None
        if not nonce or not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise SsoRefused("the ID token was not issued for this sign-in (nonce mismatch)", "nonce-mismatch")
        audiences = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
        if len(audiences) > 1 and claims.get("azp") != self.cfg.client_id:
            raise SsoRefused("the ID token was issued to another client (azp)", "bad-id-token")
        return claims

    def _userinfo(self, url: str, access_token: str, redirect_url: str) -> dict[str, Any]:
        try:
            with self._oauth(redirect_url) as http:
                response = http.request("GET", url, headers={"Authorization": f"Bearer {access_token}"},
                                    withhold_token=True)
            response.raise_for_status()
            data = response.json()
        except Exception as exc:  # noqa: BLE001 - network or format
            raise SsoRefused(f"the identity provider's userinfo cannot be read ({exc})", "provider-unreachable",
                             503) from None
        if not isinstance(data, dict):
            raise SsoRefused("the identity provider's userinfo is not a JSON object", "provider-misconfigured", 503)
        return data

    def logout_url(self, post_logout_redirect: str) -> str | None:
        """The provider's end-session URL (RP-initiated logout), when it offers one and it is wanted."""
        if not self.cfg.logout_at_provider:
            return None
        try:
            meta = self.metadata()
        except SsoRefused:
            return None
        if not meta.end_session_endpoint:
            return None
        from urllib.parse import urlencode

        sep = "&" if "?" in meta.end_session_endpoint else "?"
        query = urlencode({"client_id": self.cfg.client_id, "post_logout_redirect_uri": post_logout_redirect})
        return f"{meta.end_session_endpoint}{sep}{query}"
