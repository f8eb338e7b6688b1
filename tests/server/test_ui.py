"""The web UI at ``/`` in a real headless Chromium (Playwright) against a live uvicorn server.

Each test asserts what a user sees. The browser is Debian's ``/usr/bin/chromium`` (scripts/test.sh
installs it); nothing is downloaded. The fixtures and helpers here are shared by the other
``test_ui_*.py`` files; test_ui_a11y.py writes the screenshots of docs/ui.md (``BASTION_UI_SCREENSHOTS=1``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.server.conftest import ADMIN_PW, ALICE_PW, auth

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS = os.environ.get("BASTION_UI_SCREENSHOTS") == "1"  # test_ui_a11y.py writes docs/ui-*.png
ANSWER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the UI tests need Debian's chromium "
                    "(scripts/test.sh installs it: apt-get install chromium)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def configured(served):
    """Extract answers that always cite (the hash embedder's scores say nothing about evidence).
    Set before the server answers anything: the answerer is cached on first use."""
    served.ws.config.answer.mode = "extract"
    served.ws.config.answer.min_evidence = -1.0
    served.ws.config.answer.min_evidence_zh = -1.0
    return served


@pytest.fixture
def site(configured, live):
    return live


def _console_problem(msg) -> bool:
    """A CSP violation, or a script's console error. Chromium also logs every 4xx/5xx response as an
    error ("Failed to load resource"): those are the server's answers the UI shows, not script errors."""
    if "Content Security Policy" in msg.text or "Refused to" in msg.text:
        return True
    return msg.type == "error" and not msg.text.startswith("Failed to load resource")


class Pages:
    """New browser contexts (separate cookie jars); fails the test on CSP violations, uncaught script
    errors and console errors."""

    def __init__(self, browser):
        self.browser, self.contexts, self.problems = browser, [], []

    def new(self, width=1280, height=800, **kw):
        ctx = self.browser.new_context(viewport={"width": width, "height": height}, **kw)
        self.contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: self.problems.append(f"console {msg.type}: {msg.text}")
                if _console_problem(msg) else None)
        return page

    def close(self):
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def pages(browser):
    p = Pages(browser)
    yield p
    p.close()
    assert not p.problems, p.problems


def expect(locator, **kw):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator, **kw)


def login(page, site, user, password):
    page.goto(site + "/")
    page.fill("#login-user", user)
    page.fill("#login-password", password)
    page.click("#login-submit")
    expect(page.locator("#who-user")).to_have_text(user)


def ask(page, question):
    """Ask in the chat; returns the answer card once the final answer replaced the draft."""
    page.fill("#question", question)
    page.click("#ask-submit")
    card = page.locator(".turn-answer").last
    expect(card).to_have_attribute("data-decision", re.compile(r"\w+"), timeout=ANSWER_TIMEOUT_MS)
    return card


def no_horizontal_overflow(page) -> bool:
    """Nothing sticks out sideways. Measured against the viewport's width: on a phone (``is_mobile``) the
    browser widens the layout to fit what overflows, so ``innerWidth`` grows with the page."""
    return page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


# -- (a) login -------------------------------------------------------------------------------------------
def test_login_errors_and_session(site, pages, served):
    page = pages.new()
    page.goto(site + "/")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()

    page.fill("#login-user", "alice")
    page.fill("#login-password", "not-her-password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("wrong username or password")
    expect(page.locator("#view-chat")).to_be_hidden()

    # a locked account shows the server's 429 detail
    throttle = served.app.state.server.accounts.throttle
    throttle.max_per_pair = 1
    try:
        page.fill("#login-user", "root")
        page.fill("#login-password", "wrong")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("too many failed logins; try again in 30 s")
    finally:
        throttle.max_per_pair = 5

    page.fill("#login-user", "alice")
    page.fill("#login-password", ALICE_PW)
    page.click("#login-submit")
    expect(page.locator("#who-user")).to_have_text("alice")
    expect(page.locator("#who-role")).to_have_text("member")
    expect(page.locator("#login-error")).to_be_hidden()
    expect(page.locator("#question")).to_be_visible()
    expect(page.locator('#nav a[data-view="chat"]')).to_be_visible()
    for view in ("sources", "health", "admin", "audit"):  # members do not see the admin tabs
        expect(page.locator(f'#nav a[data-view="{view}"]')).to_be_hidden()
    cookie = next(c for c in page.context.cookies() if c["name"] == "bastion_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

    page.reload()  # the session resumes from GET /auth/me
    expect(page.locator("#who-user")).to_have_text("alice")
    expect(page.locator("#question")).to_be_visible()

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()


# -- (b, c) ask, read the cited passage, give feedback ---------------------------------------------------------
def test_ask_cite_and_feedback(site, pages, served):
    from sqlalchemy import select

    from bastion.catalog.models import FeedbackRow

    page = pages.new(1280, 800)
    login(page, site, "alice", ALICE_PW)
    card = ask(page, "What was the Q3 2026 revenue?")
    text = card.locator(".answer-text")
    expect(text).to_contain_text("Q3 2026 revenue was EUR 48.2 million")
    expect(text).not_to_have_class(re.compile("draft"))
    expect(card.locator(".abstain-label")).to_have_count(0)
    cite = text.locator("button.cite").first
    expect(cite).to_have_text("[1]")
    expect(card.locator(".sources li")).to_contain_text("finance/q3.md")

    cite.click()
    panel = page.locator("#passage-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#passage-meta")).to_contain_text("finance/q3.md")
    body = page.locator("#passage-body")
    expect(body).to_contain_text("Q3 2026 revenue was EUR 48.2 million, up 9 percent.")
    mark = body.locator("mark")
    expect(mark).to_have_count(1)
    quoted = mark.text_content()
    assert quoted and quoted in body.text_content() and "48.2 million" in quoted
    page.click("#passage-close")
    expect(panel).to_be_hidden()

    # thumbs up: a confirmation, and the verdict is stored with the answer's lineage
    card.get_by_role("button", name="Helpful", exact=True).click()
    expect(card.locator(".feedback-done")).to_contain_text("feedback was saved")

    # thumbs down with a corrected answer, on a follow-up question (history is sent along)
    card2 = ask(page, "What is the hotel cost limit per night in Europe?")
    expect(card2.locator(".answer-text")).to_contain_text("EUR 180")
    card2.get_by_role("button", name="Not helpful").click()
    card2.locator(".feedback-form textarea").fill("EUR 180 per night in Europe.")
    card2.get_by_role("button", name="Send feedback").click()
    expect(card2.locator(".feedback-done")).to_contain_text("correction were saved")

    with served.ws.catalog.session() as s:
        rows = s.scalars(select(FeedbackRow).order_by(FeedbackRow.id)).all()
        got = [(r.user_id, r.rating, r.correction) for r in rows]
        lineages = [r.lineage_id for r in rows]
    assert got == [("alice", 1, None), ("alice", -1, "EUR 180 per night in Europe.")]
    assert all(served.ws.lineage(lid)["user_id"] == "alice" for lid in lineages)


# -- (d) admin: users, keys, sync, audit ------------------------------------------------------------------
def test_admin_pages(site, pages, served):
    import httpx

    # alice asks (over her API key) so the audit log has her read in it
    r = httpx.post(site + "/api/v1/ask", headers=auth(served.keys["alice"]), timeout=60,
                   json={"question": "What was the Q3 2026 revenue?"})
    assert r.status_code == 200 and r.json()["citations"]

    page = pages.new(1280, 800)
    login(page, site, "root", ADMIN_PW)
    for view in ("sources", "admin", "audit"):
        expect(page.locator(f'#nav a[data-view="{view}"]')).to_be_visible()

    page.click('#nav a[data-view="admin"]')
    users = page.locator("#users-table tbody")
    for name in ("alice", "bob", "erin", "root"):
        expect(users.locator(f'tr[data-user="{name}"] td.user-name')).to_have_text(name)
    expect(users.locator('tr[data-user="alice"] input')).to_have_value("finance, staff")
    expect(page.locator("#groups-table tbody")).to_contain_text("finance")

    # change bob's role
    bob = users.locator('tr[data-user="bob"]')
    bob.locator("select").select_option("editor")
    bob.get_by_role("button", name="Save bob").click()
    expect(page.locator("#toast")).to_contain_text("Saved bob: editor")
    assert served.app.state.server.accounts.role("bob") == "editor"

    # add a user
    form = page.locator("#user-form")
    form.locator('input[name="user"]').fill("dora")
    form.locator('input[name="groups"]').fill("hr, staff")
    form.get_by_role("button", name="Add user").click()
    expect(form.locator(".form-status")).to_have_text("Added dora (member).")
    expect(users.locator('tr[data-user="dora"] input')).to_have_value("hr, staff")

    # a new key is shown once; then revoked with two clicks
    keys = page.locator("#key-form")
    keys.locator('input[name="user"]').fill("bob")
    keys.locator('input[name="name"]').fill("ci")
    keys.locator('input[name="expires_in"]').fill("30d")
    keys.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    key = page.locator("#new-key-value").input_value()
    assert key.startswith("bst_")
    key_id = key.split("_")[1]
    row = page.locator(f'#keys-table tr[data-key="{key_id}"]')
    expect(row).to_contain_text("bob")
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Confirm revoke").click()
    expect(page.locator(f'#keys-table tr[data-key="{key_id}"]')).to_contain_text("revoked")
    assert httpx.get(site + "/api/v1/auth/me", headers=auth(key)).status_code == 401

    # sources: sync now shows progress until the job completes
    page.click('#nav a[data-view="sources"]')
    src = page.locator('#sources-table tr[data-source="docs"]')
    expect(src).to_contain_text("folder")
    src.get_by_role("button", name="Sync docs now").click()
    expect(page.locator("#job-live")).to_be_visible()
    expect(page.locator("#job-live-text")).to_contain_text("completed", timeout=30_000)
    expect(page.locator("#job-bar")).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator("#jobs-table tbody tr").first).to_contain_text("completed")

    # audit viewer: alice's ask is listed; filters narrow it down
    page.click('#nav a[data-view="audit"]')
    audit = page.locator("#audit-table tbody")
    expect(audit.locator('tr[data-action="ask"]').first).to_contain_text("alice")
    page.fill('#audit-form input[name="actor"]', "alice")
    page.fill('#audit-form input[name="action"]', "ask")
    page.click('#audit-form button[type="submit"]')
    expect(audit.locator("tr")).to_have_count(1)
    expect(audit.locator("tr")).to_contain_text("What was the Q3 2026 revenue?")
    href = page.locator("#audit-export").get_attribute("href")
    assert href.startswith("/api/v1/audit/export?") and "actor=alice" in href
    exported = page.request.get(site + href)  # the session cookie authenticates the GET
    assert exported.status == 200
    lines = [json.loads(x) for x in exported.text().splitlines()]
    assert [(e["actor"], e["action"]) for e in lines] == [("alice", "ask")]


# -- (e) a member on the admin view ---------------------------------------------------------------------
def test_member_is_refused_admin(site, pages):
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    for view in ("admin", "sources", "health", "audit"):
        page.goto(f"{site}/#{view}")
        refusal = page.locator("#view-forbidden")
        expect(refusal).to_be_visible()
        expect(refusal).to_contain_text("You need the admin role")
        expect(page.locator("#users-table")).to_be_hidden()
    # the API refuses too, with a problem document
    status, ctype, body = page.evaluate("""async () => {
        const r = await fetch('/api/v1/users');
        return [r.status, r.headers.get('content-type'), await r.json()];
    }""")
    assert status == 403 and ctype == "application/problem+json"
    assert "admin role" in body["detail"]
    # a write with her CSRF token is refused as well
    status = page.evaluate("""async () => {
        const me = await (await fetch('/api/v1/auth/me')).json();
        const r = await fetch('/api/v1/users', {method: 'POST', headers: {'Content-Type': 'application/json',
            'X-CSRF-Token': me.csrf_token}, body: JSON.stringify({user: 'mallory', role: 'admin'})});
        return r.status;
    }""")
    assert status == 403
    # and without the token the session cannot write at all
    status = page.evaluate("""async () => (await fetch('/api/v1/feedback', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({lineage_id: 'x', rating: 'up'})})).status""")
    assert status == 403


# -- (f) Chinese ---------------------------------------------------------------------------------------
def test_chinese_question(site, pages):
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    card = ask(page, "住宿费用每晚不超过多少？")
    expect(page.locator(".turn-question").last).to_have_text("住宿费用每晚不超过多少？")
    text = card.locator(".answer-text")
    expect(text).to_contain_text("住宿费用每晚不超过 180 欧元")
    expect(card).to_have_attribute("lang", "zh-CN")
    expect(card.locator(".sources li").first).to_contain_text("报销")
    box = text.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 5  # laid out, not collapsed
    text.locator("button.cite").first.click()
    expect(page.locator("#passage-body mark")).to_have_text("住宿费用每晚不超过 180 欧元。")
    expect(page.locator("#passage-meta")).to_contain_text("hr/报销.md")


# -- (g) a phone ----------------------------------------------------------------------------------------
def test_phone_layout(site, pages):
    page = pages.new(390, 844, is_mobile=True, has_touch=True, device_scale_factor=2)
    page.goto(site + "/")
    expect(page.locator("#login-form")).to_be_visible()
    assert no_horizontal_overflow(page)
    login(page, site, "alice", ALICE_PW)
    expect(page.locator("#question")).to_be_visible()
    assert no_horizontal_overflow(page)
    card = ask(page, "What was the Q3 2026 revenue? Please quote the quarterly results document in full detail.")
    expect(card.locator(".answer-text")).to_be_visible()
    expect(card.locator(".answer-text")).to_contain_text("48.2 million")
    expect(page.locator("#question")).to_be_visible()
    assert no_horizontal_overflow(page)
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390

    # the citation opens as a full-screen sheet
    card.locator("button.cite").first.tap()
    panel = page.locator("#passage-panel")
    expect(panel.locator("mark")).to_be_visible()
    pb = panel.bounding_box()
    assert pb["x"] == 0 and pb["width"] == 390
    assert no_horizontal_overflow(page)
    page.locator("#passage-close").tap()
    expect(panel).to_be_hidden()

    # the admin pages' wide tables scroll inside their frames, not the page
    admin = pages.new(390, 844, is_mobile=True, has_touch=True)
    login(admin, site, "root", ADMIN_PW)
    for view in ("admin", "audit", "sources", "health"):
        admin.goto(f"{site}/#{view}")
        expect(admin.locator(f"#view-{view} table tbody tr:not(.empty-row)").first).to_be_visible()
        assert no_horizontal_overflow(admin), view


# -- streaming: the draft shows dimmed, the checked answer replaces it; server text stays inert ------------------
HOSTILE_ANSWER = '<img src=x id=pwn-answer> was EUR 48.2 million [1]. <script>window.pwned=1</script>'


class _SlowAnswerer:
    """Streams draft tokens, waits until the test has seen them, then answers with hostile text."""

    def __init__(self, chunk_id: str):
        import threading

        self.chunk_id, self.release, self.histories = chunk_id, threading.Event(), []

    def ask(self, question, principal, *, mode=None, history=None, source=None, on_token=None):
        from bastion.generation.results import Answer, Citation

        self.histories.append([(m.role, m.content) for m in history or []])
        for token in ["Revenue ", "<b>was</b> ", "<img src=x id=pwn-draft>"]:
            on_token(token)
        self.release.wait(20)
        cite = Citation(n=1, chunk_id=self.chunk_id, document="<b>q3</b>", path="finance/q3.md", page=None,
                        quote="EUR 48.2 million", doc_id="doc", version_id="ver")
        return Answer(answer=HOSTILE_ANSWER, abstained=False, decision="answered", reason=None, citations=[cite],
                      lineage_id="0" * 32, question=question, rewritten_question=None, language="en", mode="answer",
                      grounded=True)


def test_streamed_draft_and_hostile_text(site, pages, served):
    hit = served.ws.search("Q3 2026 revenue", served.ws.principal("alice"), 1)[0]
    fake = _SlowAnswerer(hit.chunk_id)
    from bastion.generation.answer import Assistant

    served.ws.answerer_for = lambda assistant: Assistant(answerer=fake, sources=None)  # the real SSE route, a scripted answerer

    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    page.fill("#question", "How was Q3?")
    page.click("#ask-submit")
    card = page.locator(".turn-answer").last
    draft = card.locator(".answer-text.draft")
    expect(draft).to_have_text("Revenue <b>was</b> <img src=x id=pwn-draft>")
    expect(card.locator(".draft-label")).to_contain_text("not yet checked")
    expect(page.locator("#ask-stop")).to_be_visible()
    assert float(draft.evaluate("e => getComputedStyle(e).opacity")) < 1  # dimmed
    fake.release.set()
    expect(card).to_have_attribute("data-decision", "answered")
    expect(card.locator(".draft-label")).to_have_count(0)
    text = card.locator(".answer-text")
    expect(text).not_to_have_class(re.compile("draft"))
    expect(text).to_have_text(HOSTILE_ANSWER)
    expect(card.locator(".sources li")).to_contain_text("<b>q3</b>")
    assert page.locator("#pwn-draft, #pwn-answer, .turn-answer b, .turn-answer script").count() == 0
    assert page.evaluate("window.pwned") is None
    text.locator("button.cite").click()
    expect(page.locator("#passage-title")).to_have_text("<b>q3</b>")
    expect(page.locator("#passage-body mark")).to_have_text("EUR 48.2 million")

    # a follow-up (Enter sends) carries the previous turn as history
    page.fill("#question", "And Q4?")
    page.press("#question", "Enter")
    expect(page.locator(".turn-answer")).to_have_count(2)
    expect(page.locator(".turn-answer").last).to_have_attribute("data-decision", "answered")
    assert fake.histories[-1] == [("user", "How was Q3?"), ("assistant", HOSTILE_ANSWER)]


# -- data health: an answer from a garbled source warns; the admin acknowledges the alert ------------------
GARBLED_QUESTION = "住宿费用每晚不超过多少？"


def test_data_health_answer_warning_and_alerts(site, pages, served, tmp_path):
    import httpx

    from tests.conftest import write

    member = pages.new()
    login(member, site, "alice", ALICE_PW)
    healthy = ask(member, GARBLED_QUESTION)  # positive control: a healthy source, no warning
    expect(healthy.locator(".sources li").first).to_contain_text("报销")
    expect(healthy.locator(".answer-warning")).to_have_count(0)

    # the Chinese document turns into mojibake: the sync publishes it and opens a quality alert
    text = "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n"
    write(tmp_path / "docs" / "hr" / "报销.md", text.encode("utf-8").decode("cp1252", errors="replace"))
    [run] = served.ws.sync("docs")
    [alert] = run.alerts
    assert alert["check"] == "quality.garbled" and alert["kind"] == "quality"

    card = ask(member, GARBLED_QUESTION)  # a Chinese answer warns in Chinese, in plain words for a member
    expect(card.locator(".sources li").first).to_be_visible()
    warning = card.locator(".answer-warning")
    expect(warning).to_be_visible()
    expect(warning.locator("li")).to_have_count(1)
    expect(warning.locator("li")).to_have_text("数据源 docs 中有些文档可能是乱码或为空，引用可能有误。")
    expect(warning).to_have_attribute("lang", "zh-CN")
    card = ask(member, "What is the hotel cost limit per night in Europe?")  # an English one in English
    expect(card.locator(".answer-text")).to_contain_text("EUR 180")
    warning = card.locator(".answer-warning")
    expect(warning).to_be_visible()
    expect(warning.locator("li")).to_have_text("Some documents of docs may be garbled or empty, so a quote could be wrong.")
    assert alert["message"] not in card.inner_text()  # the alert's own wording (figures) is for admins
    assert warning.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 246, 224)"  # amber
    member.goto(f"{site}/#health")  # and the view itself is for admins only
    expect(member.locator("#view-forbidden")).to_be_visible()

    admin = pages.new()
    login(admin, site, "root", ADMIN_PW)
    card = ask(admin, "What is the hotel cost limit per night in Europe?")  # the admin reads the alert itself
    expect(card.locator(".answer-warning li")).to_have_text(f"Source docs has an open quality alert: {alert['message']}")
    admin.click('#nav a[data-view="health"]')
    expect(admin.locator("#view-health")).to_be_visible()
    src = admin.locator('#health-sources tr[data-source="docs"]')
    expect(src.locator("td").nth(1)).to_have_text("completed")
    expect(src.locator("td").nth(3)).to_have_text("3")
    expect(src.locator("td").nth(4)).to_have_text("1")
    row = admin.locator(f'#health-alerts tr[data-alert="{alert["id"]}"]')
    expect(row).to_contain_text("docs")
    expect(row).to_contain_text("quality")
    expect(row).to_contain_text(alert["message"])
    expect(row.locator(".alert-status")).to_have_text("open")
    report = admin.locator("#health-report")
    assert report.get_attribute("target") == "_blank" and report.get_attribute("rel") == "noopener"
    page = admin.request.get(site + report.get_attribute("href"))  # the session cookie authenticates it
    assert page.status == 200 and "garbled" in page.text()

    row.get_by_role("button", name="Acknowledge").click()
    expect(row.locator(".alert-status")).to_have_text("acknowledged")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(admin.locator("#toast")).to_contain_text(f"Alert {alert['id']} acknowledged")
    [stored] = served.ws.monitor.alerts()
    assert stored["status"] == "acknowledged" and stored["acknowledged_by"] == "root"

    # "Run checks now" re-evaluates and keeps the acknowledged alert
    admin.click("#health-run")
    expect(admin.locator("#toast")).to_contain_text("Checks ran: 1 unresolved alert")
    expect(row.locator(".alert-status")).to_have_text("acknowledged")

    # the labels stay English in a Chinese browser, like every other view (no half-translated UI)
    zh = pages.new(locale="zh-CN")
    login(zh, site, "root", ADMIN_PW)
    expect(zh.locator('#nav a[data-view="health"]')).to_have_text("Data health")

    # resolved: the list is empty and says so; a later answer no longer warns
    row.get_by_role("button", name="Resolve").click()
    expect(admin.locator("#health-alerts tbody tr.empty-row")).to_have_text(
        "No unresolved alerts: the checks found nothing wrong.")
    expect(src.locator("td").nth(4)).to_have_text("0")
    assert served.ws.monitor.alerts() == []
    r = httpx.post(site + "/api/v1/ask", headers=auth(served.keys["alice"]), timeout=60,
                   json={"question": "What is the hotel cost limit per night in Europe?"})
    assert r.json()["citations"] and r.json()["warnings"] == []
