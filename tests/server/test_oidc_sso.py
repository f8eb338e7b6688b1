"""Browser single sign-on against a real OpenID Connect provider (``oidc-provider`` under node, from
tests/oidc) and a real Bastion server on loopback ports.

The browser tests drive Debian's Chromium through the provider's own login and consent pages; the
refusal tests drive the same pages over HTTP, then tamper with what comes back to the callback.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from tests.conftest import stop_process
from tests.server.conftest import free_port, running

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import browser, expect, pages  # noqa: F401

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
SECRET_ENV, SECRET = "BASTION_TEST_OIDC_SECRET", "client-secret-for-the-sso-tests-0123456789"
ACCOUNTS = {
    "dana": {"groups": ["finance", "staff"], "email": "dana@example.com", "name": "Dana Finance"},
    "eve": {"groups": ["staff"], "email": "eve@example.com"},
    "ivan": {"groups": ["bastion-admins"]},
    "late": {"groups": ["staff"], "id_token_ttl": 1, "token_delay_ms": 2100},  # expired when it arrives
}


@dataclass
class Idp:
    issuer: str
    accounts_file: Path
    bastion_port: int  # the one port whose callback the provider's client allows

    def set_groups(self, user: str, groups: list[str]) -> None:
        accounts = json.loads(self.accounts_file.read_text())
        accounts.setdefault(user, {})["groups"] = groups
        self.accounts_file.write_text(json.dumps(accounts))


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """The provider under node, with one confidential client whose callback is a fixed free port."""
    if shutil.which("node") is None:
        pytest.fail("node is missing: the SSO tests run the OIDC provider under Node.js 20.19 or later "
                    "(scripts/test-packages.txt lists nodejs)", pytrace=False)
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("tests/oidc/node_modules is missing: run `npm ci --prefix tests/oidc` "
                    "(scripts/test.sh does)", pytrace=False)
    tmp = tmp_path_factory.mktemp("idp")
    port = free_port()
    accounts = tmp / "accounts.json"
    accounts.write_text(json.dumps(ACCOUNTS))
    settings = tmp / "settings.json"
    settings.write_text(json.dumps({
        "port": 0, "client_id": "bastion", "client_secret": SECRET, "public_client_id": "bastion-public",
        "accounts_file": str(accounts),
        "redirect_uris": [f"http://127.0.0.1:{port}/auth/oidc/callback"],
        "post_logout_redirect_uris": [f"http://127.0.0.1:{port}/"]}))
    proc = subprocess.Popen(["node", str(OIDC_DIR / "provider.mjs"), str(settings)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "listening <issuer>", or EOF if node failed
        assert line.startswith("listening "), f"the OIDC provider did not start: {line!r}"
        yield Idp(line.split()[1], accounts, port)
    finally:
        stop_process(proc)


def oidc_config(idp: Idp, **overrides):
    from bastion.core.config import OidcConfig

    settings = {"issuer": idp.issuer, "client_id": "bastion", "client_secret_env": SECRET_ENV,
                "scopes": ["openid", "profile", "email", "groups"], "label": "Example ID",
                "admin_groups": ["bastion-admins"], "leeway_s": 0} | overrides
    return OidcConfig(**settings)


@contextmanager
def sso_server(served, idp: Idp, monkeypatch, **overrides):
    """``served``'s workspace with ``[auth.oidc]`` under uvicorn on the provider's callback port."""
    import uvicorn

    from bastion.server import create_app

    monkeypatch.setenv(SECRET_ENV, SECRET)
    served.ws.config.auth.oidc = oidc_config(idp, **overrides)
    app = create_app(served.ws)
    with running(uvicorn.Config(app, host="127.0.0.1", port=idp.bastion_port, log_level="warning")) as url:
        served.oidc = app.state.oidc  # the tests sign a login cookie the way the server does
        yield url


@pytest.fixture
def site(served, idp, monkeypatch):
    with sso_server(served, idp, monkeypatch) as url:
        yield url


# -- in the browser ----------------------------------------------------------------------------------
def sso_login(browsers, site, user):
    """A fresh browser (no provider session) signs in through the provider's pages; returns the page."""
    page = browsers.new()
    page.goto(site + "/")
    button = page.locator("#login-sso")
    expect(button).to_have_text("Sign in with Example ID")
    button.click()
    page.locator('input[name="login"]').fill(user)
    page.locator('input[name="password"]').fill("any-password")
    page.locator('button[type="submit"]').click()
    consent = page.get_by_role("button", name="Continue")
    expect(consent.or_(page.locator("#who-user:visible, #sso-error")).first).to_be_visible()
    if consent.is_visible():  # the provider asks once per browser session
        consent.click()
    return page


def visible_docs(page):
    page.click('#nav a[data-view="search"]')
    expect(page.locator("#search-heading")).to_have_text("Your documents")
    expect(page.locator("#search-status")).to_contain_text("documents you can read")
    return page.locator("#search-results .result-doc")


def test_sso_login_groups_logout(site, idp, pages, served):  # noqa: F811 - fixtures
    # dana's claimed group "finance" admits her to the finance document; eve (staff only) is denied it
    dana = sso_login(pages, site, "dana")
    expect(dana.locator("#who-user")).to_have_text("dana")
    expect(dana.locator("#who-role")).to_have_text("member")
    expect(visible_docs(dana).filter(has_text="finance/q3.md")).to_have_count(1)
    eve = sso_login(pages, site, "eve")
    expect(eve.locator("#who-user")).to_have_text("eve")
    docs = visible_docs(eve)
    expect(docs.filter(has_text="hr/travel.md")).to_have_count(1)  # she can search
    expect(docs.filter(has_text="finance/q3.md")).to_have_count(0)
    assert served.ws.directory.principal("eve").groups == frozenset({"staff"})

    # the provider now says eve is in finance: her next sign-in brings the document
    idp.set_groups("eve", ["staff", "finance"])
    eve = sso_login(pages, site, "eve")
    expect(visible_docs(eve).filter(has_text="finance/q3.md")).to_have_count(1)

    # logout ends the Bastion session (the old cookie is refused) and signs out at the provider
    cookie = next(c["value"] for c in eve.context.cookies() if c["name"] == "bastion_session")
    eve.click("#logout")
    eve.get_by_role("button", name=re.compile("Yes, sign me out", re.I)).click()
    expect(eve.locator("#login-sso")).to_be_visible()
    assert httpx.get(site + "/api/v1/auth/me", cookies={"bastion_session": cookie}).status_code == 401

    # the claimed admin group maps to the admin role
    ivan = sso_login(pages, site, "ivan")
    expect(ivan.locator("#who-role")).to_have_text("admin")


def test_existing_policy_and_tampered_state_in_the_browser(served, idp, pages, monkeypatch):  # noqa: F811
    with sso_server(served, idp, monkeypatch, jit="existing", password_login=False) as url:
        page = pages.new()
        page.goto(url + "/")
        expect(page.locator("#login-sso")).to_be_visible()
        expect(page.locator("#login-user")).to_be_hidden()  # password sign-in is off
        denied = sso_login(pages, url, "eve")  # not in the directory
        expect(denied.locator("#sso-error")).to_contain_text("eve is not a user of this Bastion")
        assert not [c for c in denied.context.cookies() if c["name"] == "bastion_session"]

        # a sign-in under way in this browser, then a callback link with someone else's state and code
        # (a login CSRF attempt): refused, no session
        page = pages.new()
        page.goto(url + "/")
        page.click("#login-sso")
        expect(page.locator('input[name="login"]')).to_be_visible()
        page.goto(url + "/auth/oidc/callback?code=attackers-code&state=attackers-state")
        expect(page.locator("#sso-error")).to_contain_text("state mismatch")
        assert not [c for c in page.context.cookies() if c["name"] == "bastion_session"]

        # password_login = false: the API refuses passwords too, even the right one
        from tests.server.conftest import ALICE_PW

        refused = httpx.post(url + "/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW})
        assert refused.status_code == 403 and "sign in with Example ID" in refused.json()["detail"]


# -- over HTTP: the callback's refusals ---------------------------------------------------------------
def _form(page: httpx.Response) -> tuple[str, dict]:
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
    assert action, page.text[:500]
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    return urljoin(str(page.url), action.group(1)), hidden


def provider_callback(http: httpx.Client, site: str, user: str) -> str:
    """Start a sign-in at Bastion, sign in and consent at the provider; the callback URL it sends back."""
    start = http.get(site + "/auth/oidc/login")
    assert start.status_code == 303, start.text
    response = http.get(start.headers["location"], follow_redirects=True)
    for _ in range(4):
        action, fields = _form(response)
        if fields.get("prompt") == "login":
            fields |= {"login": user, "password": "any-password"}
        response = http.post(action, data=fields)
        while response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(site):
                return location
            response = http.get(location)
    raise AssertionError("the provider never redirected back")


def _denials(served, reason: str) -> list[dict]:
    from bastion.audit import AuditQuery

    return [e for e in served.ws.audit.query(AuditQuery(action="login"))
            if e["via"] == "oidc" and e["outcome"] == "denied" and e["detail"].get("reason") == reason]


def _refused(response: httpx.Response, text: str) -> None:
    assert response.status_code in (400, 403), response.text
    assert text in response.text
    assert "bastion_session" not in response.headers.get("set-cookie", "")


def test_callback_signs_in_once_and_refuses_replays(site, served):
    with httpx.Client() as http:
        back = provider_callback(http, site, "dana")
        ok = http.get(back)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        me = http.get(site + "/api/v1/auth/me")
        assert me.json()["user"] == "dana" and "finance" in me.json()["groups"]
        _refused(http.get(back), "sign-in cookie is missing")  # the login cookie went with its use
    from bastion.catalog.models import UserRow

    with served.ws.catalog.session() as s:  # a just-in-time user, marked as coming from the provider
        user = s.get(UserRow, "dana")
        assert user is not None and (user.origin, user.email) == ("oidc", "dana@example.com")

    with httpx.Client() as http:  # the same response again, with the login cookie kept: a replay
        back = provider_callback(http, site, "dana")
        flow = http.cookies.get("bastion_oidc_flow")
        assert http.get(back).status_code == 303
        replay = httpx.get(back, cookies={"bastion_oidc_flow": flow})
        _refused(replay, "already used")
    assert _denials(served, "replayed")


def test_callback_refusals(site, served, idp):
    with httpx.Client() as http:  # a forged state
        back = provider_callback(http, site, "eve")
        _refused(http.get(re.sub(r"state=[^&]+", "state=forged", back)), "state mismatch")
    assert _denials(served, "state-mismatch")

    with httpx.Client() as http:  # a login cookie this server did not sign
        back = provider_callback(http, site, "eve")
        flow = http.cookies.get("bastion_oidc_flow")
        forged = flow.split(".")[0] + ".AAAA"
        _refused(httpx.get(back, cookies={"bastion_oidc_flow": forged}), "sign-in cookie is not valid")

    with httpx.Client() as http:  # the right cookie, but a nonce the ID token does not carry
        back = provider_callback(http, site, "eve")
        flow = served.oidc.read_flow(http.cookies.get("bastion_oidc_flow"))
        resigned = served.oidc._sign({**flow, "n": "another-nonce"})
        _refused(httpx.get(back, cookies={"bastion_oidc_flow": resigned}), "nonce mismatch")
    assert _denials(served, "nonce-mismatch")

    with httpx.Client() as http:  # an ID token that has expired when it arrives (ttl 1 s, leeway 0)
        back = provider_callback(http, site, "late")
        _refused(http.get(back), "token expired")
    assert _denials(served, "bad-id-token")

    served.ws.directory.add_user("dora", groups=["staff"])  # a disabled user of the directory
    served.ws.directory.set_active("dora", False)
    with httpx.Client() as http:
        back = provider_callback(http, site, "dora")
        _refused(http.get(back), "dora is disabled")
    assert _denials(served, "disabled-user")[0]["actor"] == "dora"

    with httpx.Client() as http:  # the provider's own refusal (the user cancelled) is shown, not a session
        start = http.get(site + "/auth/oidc/login")
        state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
        query = urlencode({"error": "access_denied", "error_description": "End-User aborted interaction",
                           "state": state})
        _refused(http.get(f"{site}/auth/oidc/callback?{query}"), "End-User aborted interaction")



def test_public_client_signs_in_with_pkce_alone(served, idp, monkeypatch):
    with sso_server(served, idp, monkeypatch, client_id="bastion-public", client_secret_env=None) as url:
        with httpx.Client() as http:
            start = http.get(url + "/auth/oidc/login")
            query = parse_qs(urlsplit(start.headers["location"]).query)
            assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
            assert query["client_id"] == ["bastion-public"] and query["nonce"] and query["state"]
            assert http.get(provider_callback(http, url, "dana")).status_code == 303
            assert http.get(url + "/api/v1/auth/me").json()["user"] == "dana"
        with httpx.Client() as http:  # the same flow without the PKCE verifier: the provider refuses the code
            back = provider_callback(http, url, "eve")
            flow = served.oidc.read_flow(http.cookies.get("bastion_oidc_flow"))
            resigned = served.oidc._sign({**flow, "v": "a-verifier-of-someone-else-0123456789-0123456789"})
            _refused(httpx.get(back, cookies={"bastion_oidc_flow": resigned}), "did not accept the sign-in code")
    assert _denials(served, "code-rejected")


def test_existing_policy_admits_directory_users_as_the_directory_says(served, idp, monkeypatch):
    from bastion.audit import AuditQuery

    served.ws.directory.add_user("eve", groups=["staff"])  # e.g. synced from LDAP; the provider claims "staff"
    idp.set_groups("eve", ["staff", "finance"])
    try:
        with sso_server(served, idp, monkeypatch, jit="existing") as url, httpx.Client() as http:
            assert http.get(provider_callback(http, url, "eve")).status_code == 303
            me = http.get(url + "/api/v1/auth/me").json()
            assert me["user"] == "eve" and me["groups"] == ["staff"]  # the directory's groups, not the claims
            search = http.get(url + "/api/v1/documents").json()
            assert "finance/q3.md" not in json.dumps(search)
            assert "hr/travel.md" in json.dumps(search)  # positive control: she reads what staff may
            with httpx.Client() as other:  # another browser: no session at the provider
                _refused(other.get(provider_callback(other, url, "mallory")), "mallory is not a user of this Bastion")
    finally:
        idp.set_groups("eve", ["staff"])
    ok = [e for e in served.ws.audit.query(AuditQuery(action="login")) if e["via"] == "oidc" and e["outcome"] == "ok"]
    assert [e["actor"] for e in ok] == ["eve"]
    assert _denials(served, "unknown-user")[0]["actor"] == "mallory"


def test_unreachable_provider_and_missing_secret_are_clear(served, monkeypatch):
    from fastapi.testclient import TestClient

    from bastion.core.config import OidcConfig
    from bastion.core.errors import ConfigError
    from bastion.server import create_app

    port = free_port()  # nothing listens there
    served.ws.config.auth.oidc = OidcConfig(issuer=f"http://127.0.0.1:{port}", client_id="bastion")  # public client
    with TestClient(create_app(served.ws)) as client:
        assert client.get("/auth/methods").json() == {
            "password": True, "sso": {"label": "single sign-on", "login_url": "/auth/oidc/login",
                                      "logout_url": "/auth/oidc/logout"}}
        page = client.get("/auth/oidc/login", follow_redirects=False)
        assert page.status_code == 503 and "the identity provider cannot be reached" in page.text
        assert "bastion_session" not in page.headers.get("set-cookie", "")
        # the API keys keep working while the provider is down
        assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {served.keys['bob']}"}).status_code == 200

    monkeypatch.delenv(SECRET_ENV, raising=False)
    served.ws.config.auth.oidc = OidcConfig(issuer=f"http://127.0.0.1:{port}", client_id="bastion",
                                            client_secret_env=SECRET_ENV)
    with pytest.raises(ConfigError, match=f"environment variable '{SECRET_ENV}' is not set"):
        create_app(served.ws)
    served.ws.config.auth.oidc = None
    with TestClient(create_app(served.ws)) as client:  # not configured: password only, and no SSO routes
        assert client.get("/auth/methods").json() == {"password": True, "sso": None}
        assert client.get("/auth/oidc/login").status_code == 404


@pytest.mark.parametrize(("lines", "message"), [
    ('issuer = "http://idp.example.com"', "must be an https:// URL"),
    ('scopes = ["profile"]', "must include 'openid'"),
    ('algorithms = ["HS256"]', "use asymmetric algorithms"),
    ('jit = "always"', "auth.oidc.jit"),
    ('client_secret = "in-the-file"', "unknown key 'auth.oidc.client_secret'"),
    ('group_map = { "a1b2" = "Finance Team" }', "invalid group names ['Finance Team']"),
])
def test_config_errors_name_the_problem(tmp_path, lines, message):
    from bastion.core.config import load_config
    from bastion.core.errors import ConfigError

    base = 'client_id = "bastion"\n' + ("" if "issuer" in lines else 'issuer = "https://idp.example.com/realms/x"\n')
    (tmp_path / "bastion.toml").write_text(f"[auth.oidc]\n{base}{lines}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path)


def test_claims_map_to_groups_and_roles():
    from bastion.core.config import OidcConfig
    from bastion.server.oidc import SsoRefused
    from bastion.server.oidc_users import map_identity

    cfg = OidcConfig(issuer="https://login.example.com/tenant/v2.0", client_id="bastion", username_claim="email",
                     group_map={"6f1c0a9e-guid": "finance"}, allowed_groups=["6f1c0a9e-guid", "staff", "admins"],
                     group_prefix="sso-", admin_groups=["admins"], editor_groups=["staff"])
    who = map_identity(cfg, {"sub": "abc", "email": "dana@example.com",
                             "groups": ["6f1c0a9e-guid", "staff", "not-allowed"]})
    assert (who.user, who.groups, who.role) == ("dana@example.com", ("sso-finance", "sso-staff"), "editor")
    assert map_identity(cfg, {"sub": "x", "email": "a@example.com", "groups": ["admins"]}).role == "admin"
    assert map_identity(cfg, {"sub": "x", "email": "a@example.com"}).role == "member"
    with pytest.raises(SsoRefused, match="'email'"):
        map_identity(cfg, {"sub": "x", "email": "two words"})
