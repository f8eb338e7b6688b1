"""The server's security contract: who may call what, and what they learn when they may not."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.server.conftest import ALICE_PW, auth

PROBLEM = "application/problem+json"


def _routes(app):
    """(method, path with sample parameters, declared least role) for every API route."""
    def walk(routes):
        for r in routes:
            inner = getattr(r, "original_router", None)
            yield from (walk(inner.routes) if inner is not None else [r])

    out = []
    for route in walk(app.routes):
        path = getattr(route, "path", "")
        if not path.startswith(("/api/v1/", "/v1/")) or not hasattr(route, "dependant"):
            continue
        dep = next((d.call.__name__ for d in route.dependant.dependencies if d.call.__name__.startswith("require_")), None)
        for method in route.methods - {"HEAD"}:
            out.append((method, path.replace("{", "").replace("}", ""), dep))
    return out


def test_every_protected_route_refuses_a_caller_without_credentials(client, served):
    routes = [r for r in _routes(served.app) if r[1] != "/api/v1/auth/login"]
    assert len(routes) >= 25
    for method, path, _ in routes:
        r = client.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["type"] == "urn:bastion:problem:unauthenticated"
    # positive control: a valid key gets through
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["bob"])).json()["user"] == "bob"


def test_every_route_declares_a_role(served):
    undeclared = [(m, p) for m, p, dep in _routes(served.app) if dep is None and p != "/api/v1/auth/login"]
    assert undeclared == []


def test_member_is_refused_admin_routes_and_admin_is_not(client, served):
    admin_routes = [(m, p) for m, p, dep in _routes(served.app) if dep == "require_admin"]
    assert {p for _, p in admin_routes} >= {"/api/v1/users", "/api/v1/audit", "/api/v1/sources", "/api/v1/sync"}
    for method, path in admin_routes:
        r = client.request(method, path, headers=auth(served.keys["alice"]), json={})
        assert r.status_code == 403, (method, path, r.status_code)
        assert r.json()["type"] == "urn:bastion:problem:forbidden"
    assert client.get("/api/v1/users", headers=auth(served.keys["root"])).status_code == 200
    assert client.get("/api/v1/audit", headers=auth(served.keys["root"])).status_code == 200
    # the refusal itself is audited
    entries = client.get("/api/v1/audit", params={"actor": "alice", "outcome": "denied"},
                         headers=auth(served.keys["root"])).json()["entries"]
    assert {e["action"] for e in entries} >= {"users.list", "audit.read"}


def test_another_groups_document_answers_exactly_like_a_missing_one(client, served):
    q3 = served.docs["finance/q3.md"]
    bob = client.get(f"/api/v1/documents/{q3}", headers=auth(served.keys["bob"]))
    missing = client.get("/api/v1/documents/0123456789abcdef", headers=auth(served.keys["bob"]))
    assert bob.status_code == missing.status_code == 404
    strip = lambda body: {k: v for k, v in body.items() if k not in ("instance", "request_id")}  # noqa: E731
    assert strip(bob.json()) == strip(missing.json())
    alice = client.get(f"/api/v1/documents/{q3}", headers=auth(served.keys["alice"]))
    assert alice.status_code == 200 and "48.2" in alice.json()["passages"][0]["text"]
    chunk = alice.json()["passages"][0]["chunk_id"]
    assert client.get(f"/api/v1/passages/{chunk}", headers=auth(served.keys["bob"])).status_code == 404
    assert client.get(f"/api/v1/passages/{chunk}", headers=auth(served.keys["alice"])).json()["text"].count("48.2") == 1
    listed_bob = {d["path"] for d in client.get("/api/v1/documents", headers=auth(served.keys["bob"])).json()["documents"]}
    listed_alice = {d["path"] for d in client.get("/api/v1/documents", headers=auth(served.keys["alice"])).json()["documents"]}
    assert "finance/q3.md" not in listed_bob and "hr/travel.md" in listed_bob
    assert "finance/q3.md" in listed_alice


def test_search_and_answers_follow_the_callers_access(client, served):
    bob = client.post("/api/v1/search", json={"query": "Q3 2026 revenue"}, headers=auth(served.keys["bob"])).json()
    alice = client.post("/api/v1/search", json={"query": "Q3 2026 revenue"}, headers=auth(served.keys["alice"])).json()
    assert "finance/q3.md" not in {h["path"] for h in bob["hits"]}
    assert "finance/q3.md" in {h["path"] for h in alice["hits"]}
    ans = client.post("/api/v1/ask", json={"question": "What was the Q3 2026 revenue?"}, headers=auth(served.keys["alice"])).json()
    assert any(c["path"] == "finance/q3.md" for c in ans["citations"]) and "48.2" in ans["answer"]
    ans_bob = client.post("/api/v1/ask", json={"question": "What was the Q3 2026 revenue?"}, headers=auth(served.keys["bob"])).json()
    assert all(c["path"] != "finance/q3.md" for c in ans_bob["citations"]) and "48.2" not in ans_bob["answer"]


def test_the_principal_comes_only_from_the_credential(client, served):
    for body in ({"query": "revenue", "user": "alice"}, {"query": "revenue", "as": "alice"},
                 {"query": "revenue", "principal": {"user_id": "alice", "groups": ["finance"]}}):
        r = client.post("/api/v1/search", json=body, headers=auth(served.keys["bob"]))
        assert r.status_code == 422, body
    r = client.post("/api/v1/search", json={"query": "revenue"},
                    headers=auth(served.keys["bob"]) | {"X-User": "alice", "X-Groups": "finance"})
    assert "finance/q3.md" not in {h["path"] for h in r.json()["hits"]}


def test_revoked_key_is_refused_at_once(client, served):
    created = client.post("/api/v1/keys", json={"name": "laptop"}, headers=auth(served.keys["bob"]))
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["id"]
    assert client.get("/api/v1/auth/me", headers=auth(key)).status_code == 200
    assert client.delete(f"/api/v1/keys/{key_id}", headers=auth(served.keys["bob"])).json() == {"revoked": key_id}
    r = client.get("/api/v1/auth/me", headers=auth(key))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # the key list never shows secrets, and shows the revocation and last use
    listed = client.get("/api/v1/keys", headers=auth(served.keys["bob"])).json()["keys"]
    mine = next(k for k in listed if k["id"] == key_id)
    assert "key" not in mine and mine["active"] is False and mine["last_used_at"] is not None
    # a member cannot revoke someone else's key (and cannot tell it exists)
    alice_key_id = next(k["id"] for k in client.get("/api/v1/keys", headers=auth(served.keys["alice"])).json()["keys"])
    assert client.delete(f"/api/v1/keys/{alice_key_id}", headers=auth(served.keys["bob"])).status_code == 404
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["alice"])).status_code == 200


def test_expired_and_malformed_keys_are_refused(client, served):
    from bastion.accounts import Accounts

    _, expired = Accounts(served.ws.catalog).create_key("bob", expires_in=timedelta(seconds=-1))
    r = client.get("/api/v1/auth/me", headers=auth(expired))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    good = served.keys["bob"]
    for bad in (good[:-1] + ("A" if good[-1] != "A" else "B"), "bst_", "bst_x_y", good + "x", "Basic abc"):
        assert client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Basic Ym9iOnB3"}).status_code == 401
    assert client.get("/api/v1/auth/me", headers=auth(good)).status_code == 200


def test_password_login_sets_a_session_that_needs_the_csrf_token(client, served):
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    csrf = r.json()["csrf_token"]
    assert client.get("/api/v1/auth/me").json()["user"] == "alice"
    no_token = client.post("/api/v1/search", json={"query": "revenue"})
    assert no_token.status_code == 403 and no_token.json()["type"] == "urn:bastion:problem:csrf"
    assert client.post("/api/v1/search", json={"query": "revenue"}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    ok = client.post("/api/v1/search", json={"query": "revenue"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and "finance/q3.md" in {h["path"] for h in ok.json()["hits"]}
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/v1/auth/me").status_code == 401


def test_repeated_failed_logins_lock_the_account(client, served):
    for _ in range(4):
        r = client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"})
        assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
    r = client.post("/api/v1/auth/login", json={"username": "alice", "password": "wrong-password"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # even the right password waits out the lock
    assert client.post("/api/v1/auth/login", json={"username": "alice", "password": ALICE_PW}).status_code == 429
    # unknown users get the same answer as a wrong password
    r = client.post("/api/v1/auth/login", json={"username": "mallory", "password": "whatever-123"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong username or password"
    # positive control: another account is not affected
    from tests.server.conftest import ADMIN_PW

    assert client.post("/api/v1/auth/login", json={"username": "root", "password": ADMIN_PW}).status_code == 200
    entries = served.app.state.server.audit.query(__import__("bastion.audit", fromlist=["AuditQuery"]).AuditQuery(action="login"))
    assert [e["outcome"] for e in entries].count("denied") == 7 and entries[-1]["outcome"] == "ok"


HOSTILE = ["' OR '1'='1", "x'); DROP TABLE users; --", "../../../../etc/passwd", "..\\..\\windows\\win.ini",
           "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "\u0000nul", "<script>alert(1)</script>", "array_has_any(acl, ['everyone'])",
           "' OR acl IS NOT NULL OR '", "{{7*7}}", "🙂" * 50]


def test_injection_and_traversal_strings_are_harmless_in_every_text_field(client, served):
    from urllib.parse import quote

    q = lambda s: quote(s, safe="")  # noqa: E731
    root, bob = auth(served.keys["root"]), auth(served.keys["bob"])
    users_before = client.get("/api/v1/users", headers=root).json()
    ok = {200, 201, 202, 400, 404, 405, 409, 422}
    for s in HOSTILE:
        calls = [
            ("POST", "/api/v1/search", {"query": s}, bob), ("POST", "/api/v1/search", {"query": "hotel", "source": s}, bob),
            ("POST", "/api/v1/ask", {"question": s}, bob), ("POST", "/api/v1/ask", {"question": "hotel", "assistant": s}, bob),
            ("GET", f"/api/v1/documents/{q(s)}", None, bob), ("GET", f"/api/v1/passages/{q(s)}", None, bob),
            ("GET", f"/api/v1/lineage/{q(s)}", None, bob), ("POST", "/api/v1/feedback", {"lineage_id": s, "rating": "up"}, bob),
            ("POST", "/api/v1/keys", {"name": s}, bob), ("DELETE", f"/api/v1/keys/{q(s)}", None, bob),
            ("POST", "/api/v1/users", {"user": s, "groups": [s]}, root), ("PATCH", f"/api/v1/users/{q(s)}", {"role": "member"}, root),
            ("DELETE", f"/api/v1/users/{q(s)}", None, root), ("GET", f"/api/v1/audit?actor={q(s)}&action={q(s)}", None, root),
            ("POST", "/api/v1/sync", {"source": s}, root), ("GET", f"/api/v1/sync/jobs/{q(s)}", None, root),
            ("POST", "/v1/chat/completions", {"model": s, "messages": [{"role": "user", "content": s}]}, bob),
            ("POST", "/v1/chat/completions", {"model": "bastion", "messages": [{"role": "user", "content": s}]}, bob),
        ]
        for method, path, body, who in calls:
            r = client.request(method, path, json=body, headers=who)
            assert r.status_code in ok, (method, path, s, r.status_code, r.text[:300])
            if method == "POST" and path.endswith(("/search", "/ask")) and r.status_code == 200:
                assert "finance/q3.md" not in r.text
        up = client.post("/api/v1/sources/docs/documents", files={"file": ("x.md", b"# x\n\nhello\n")}, data={"path": s},
                         headers=auth(served.keys["erin"]))
        assert up.status_code in (400, 422) or (up.status_code == 202 and ".." not in up.json()["path"]), (s, up.text)
    assert not (served.ws.home.parent / "etc").exists()
    users_after = client.get("/api/v1/users", headers=root).json()
    assert {u["user"] for u in users_before["users"]} <= {u["user"] for u in users_after["users"]}
    # nothing stored was lost: alice still reads her finance document
    hits = client.post("/api/v1/search", json={"query": "Q3 2026 revenue"}, headers=auth(served.keys["alice"])).json()["hits"]
    assert "finance/q3.md" in {h["path"] for h in hits}


def test_oversize_bodies_and_wrong_types_get_problems(client, served):
    bob = auth(served.keys["bob"])
    big = client.post("/api/v1/search", content=b'{"query": "' + b"a" * 400_000 + b'"}',
                      headers=bob | {"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["type"] == "urn:bastion:problem:too-large"
    wrong = client.post("/api/v1/search", json={"query": 42, "k": "ten"}, headers=bob)
    assert wrong.status_code == 422 and wrong.headers["content-type"].startswith(PROBLEM)
    assert "query" in wrong.json()["detail"] and "k" in wrong.json()["detail"]
    assert client.post("/api/v1/search", content=b"{not json", headers=bob | {"content-type": "application/json"}).status_code == 422
    assert client.post("/api/v1/search", json={"query": "hotel", "k": 100000}, headers=bob).status_code == 422
    assert client.post("/api/v1/search", json={"query": "hotel"}, headers=bob).status_code == 200


def test_cors_is_off_by_default(client, served):
    r = client.options("/api/v1/search", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    r = client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]) | {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_health_ready_and_metrics(client, served):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"catalog": "ok", "index": "ok"}
    client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"]))
    assert client.get("/metrics", headers=auth(served.keys["bob"])).status_code == 403
    m = client.get("/metrics", headers=auth(served.keys["root"]))
    assert m.status_code == 200
    assert 'bastion_http_requests_total{method="POST",route="/api/v1/search",status="200"}' in m.text
    assert "bastion_index_chunks" in m.text and "bastion_http_request_seconds_bucket" in m.text


@pytest.mark.parametrize("role,allowed", [("editor", True), ("member", False)])
def test_upload_needs_the_editor_role_and_a_source_that_allows_it(client, served, role, allowed):
    who = "erin" if role == "editor" else "bob"
    r = client.post("/api/v1/sources/docs/documents", headers=auth(served.keys[who]),
                    files={"file": ("notice.md", b"# Notice\n\nThe canteen closes at 15:00 on Fridays.\n")},
                    data={"path": "uploads/notice.md"})
    if not allowed:
        assert r.status_code == 403
        from pathlib import Path

        assert not (Path(served.ws.sources.get("docs").config["path"]) / "uploads" / "notice.md").exists()
        return
    assert r.status_code == 202, r.text
    job = served.app.state.server.jobs.wait(r.json()["job"]["id"], timeout=60)
    assert job["status"] == "completed" and job["report"]["documents_added"] == 1
    assert client.get(f"/api/v1/sync/jobs/{job['id']}", headers=auth(served.keys["erin"])).json()["status"] == "completed"
    assert client.get(f"/api/v1/sync/jobs/{job['id']}", headers=auth(served.keys["bob"])).status_code == 404
    hits = client.post("/api/v1/search", json={"query": "canteen Fridays"}, headers=auth(served.keys["bob"])).json()["hits"]
    assert hits[0]["path"] == "uploads/notice.md"


def test_an_editor_cannot_upload_to_a_source_that_does_not_list_them(client, served, tmp_path):
    other = tmp_path / "board"
    other.mkdir()
    served.ws.sources.add_folder("board", other, acl="group:board, group:it")  # root (it) may read it: it may upload
    r = client.post("/api/v1/sources/board/documents", headers=auth(served.keys["erin"]),
                    files={"file": ("plan.md", b"# plan\n\nsecret\n")})
    assert r.status_code == 404 and not (other / "plan.md").exists()
    r = client.post("/api/v1/sources/board/documents", headers=auth(served.keys["root"]),
                    files={"file": ("plan.md", b"# plan\n\nboard plan\n")})
    assert r.status_code == 202 and (other / "plan.md").exists()


def test_feedback_is_stored_with_the_lineage_and_only_for_your_own_answers(client, served):
    ans = client.post("/api/v1/ask", json={"question": "What is the hotel cap?"}, headers=auth(served.keys["bob"])).json()
    r = client.post("/api/v1/feedback", json={"lineage_id": ans["lineage_id"], "rating": "down",
                                              "correction": "EUR 180 per night in Europe."}, headers=auth(served.keys["bob"]))
    assert r.status_code == 201
    assert client.post("/api/v1/feedback", json={"lineage_id": ans["lineage_id"], "rating": "up"},
                       headers=auth(served.keys["alice"])).status_code == 404
    from sqlalchemy import select

    from bastion.catalog.models import FeedbackRow

    with served.ws.catalog.session() as s:
        rows = s.scalars(select(FeedbackRow)).all()
    assert [(f.lineage_id, f.user_id, f.rating, f.correction) for f in rows] == [
        (ans["lineage_id"], "bob", -1, "EUR 180 per night in Europe.")]
    # the lineage is readable by its owner and admins, not by others
    assert client.get(f"/api/v1/lineage/{ans['lineage_id']}", headers=auth(served.keys["bob"])).status_code == 200
    assert client.get(f"/api/v1/lineage/{ans['lineage_id']}", headers=auth(served.keys["alice"])).status_code == 404
    assert client.get(f"/api/v1/lineage/{ans['lineage_id']}", headers=auth(served.keys["root"])).status_code == 200


def test_the_last_admin_cannot_be_demoted_or_removed(client, served):
    root = auth(served.keys["root"])
    assert client.patch("/api/v1/users/root", json={"role": "member"}, headers=root).status_code == 409
    assert client.delete("/api/v1/users/root", headers=root).status_code == 409
    assert client.post("/api/v1/users", json={"user": "carol", "role": "admin", "groups": ["it"]}, headers=root).status_code == 201
    assert client.patch("/api/v1/users/root", json={"role": "member"}, headers=root).json()["role"] == "member"
    assert client.get("/api/v1/users", headers=root).status_code == 403  # root's key now carries the member role


def test_removing_a_user_stops_their_keys_at_once(client, served):
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["bob"])).status_code == 200
    assert client.delete("/api/v1/users/bob", headers=auth(served.keys["root"])).status_code == 200
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["bob"])).status_code == 401
    assert client.get("/api/v1/auth/me", headers=auth(served.keys["alice"])).status_code == 200


@pytest.mark.model
def test_the_server_syncs_in_a_child_process_with_the_configured_embedder(tmp_path):
    """The product path: a workspace opened as `bastion serve` opens it (configured embedder) runs API
    syncs as `bastion sync` child processes; progress, report and failures come back to the job."""
    from fastapi.testclient import TestClient

    from bastion.accounts import Accounts
    from bastion.server import create_app
    from bastion.workspace import Workspace
    from tests.conftest import write

    docs = tmp_path / "docs"
    write(docs / "policy.md", "# Remote work\n\nStaff may work remotely up to three days a week.\n")
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws")
    ws.directory.add_user("root", role="admin")
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="group:staff")
    root, bob = (Accounts(ws.catalog).create_key(u)[1] for u in ("root", "bob"))
    app = create_app(ws)
    assert app.state.server.jobs.in_process is False
    import os

    # the child embeds on all cores but one (the other stays with the searches) unless configured
    assert app.state.server.jobs.sync_threads() == max(1, (os.cpu_count() or 2) - 1)
    ws.config.server.sync_threads = 3
    assert app.state.server.jobs.sync_threads() == 3
    ws.config.server.sync_threads = None
    with TestClient(app) as client:
        job = client.post("/api/v1/sync", json={"source": "docs"}, headers=auth(root)).json()
        done = app.state.server.jobs.wait(job["id"], timeout=120)
        assert done["status"] == "completed", done
        assert done["report"]["documents_added"] == 1 and done["progress"]["documents_done"] == 1
        hits = client.post("/api/v1/search", json={"query": "how many days remote work"}, headers=auth(bob)).json()["hits"]
        assert hits and hits[0]["path"] == "policy.md"
        # a failing sync is reported with its reason; the server keeps serving
        import shutil

        shutil.rmtree(docs)
        failed = app.state.server.jobs.wait(client.post("/api/v1/sync", json={"source": "docs"}, headers=auth(root)).json()["id"], 120)
        assert failed["status"] == "failed" and "docs" in failed["error"]
        assert client.post("/api/v1/search", json={"query": "remote work"}, headers=auth(bob)).json()["hits"]
    ws.close()
