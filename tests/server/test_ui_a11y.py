"""Accessibility of the web UI in a real headless Chromium: axe-core on every page at 1280 and 390 px wide,
and the main tasks done with the keyboard only.

axe-core is the npm package, fetched once with ``npm pack`` (pinned version and sha256) into pytest's
cache folder (gitignored), or read from ``BASTION_AXE_JS``. If it cannot be had the tests fail and say
why: an accessibility check that silently does not run proves nothing. With
``BASTION_UI_SCREENSHOTS=1`` the run also writes the screenshots of docs/ui.md (docs/ui-*.png).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.server.conftest import ADMIN_PW, ALICE_PW

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import (  # noqa: F401
    DOCS,
    SCREENSHOTS,
    ask,
    browser,
    configured,
    expect,
    login,
    no_horizontal_overflow,
    pages,
    site,
)

AXE_VERSION = "4.10.3"
AXE_SHA256 = "880970c081707360e64f34cea25ff91892f5bc95675b0776925b9709dd8a68bb"  # package/axe.min.js
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
BLOCKING = {"serious", "critical"}
ERIN_PW = "erin-password-1"
WIDTHS = {"desktop": dict(width=1280, height=800), "phone": dict(width=390, height=844, is_mobile=True, has_touch=True)}


def _fetch_axe(folder: Path) -> Path:
    """axe.min.js of axe-core AXE_VERSION, from the npm registry with ``npm pack``, checked against AXE_SHA256."""
    target = folder / f"axe-{AXE_VERSION}.min.js"
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == AXE_SHA256:
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the accessibility tests need axe-core: install npm (it fetches the axe-core package), "
                    "or set BASTION_AXE_JS to a copy of axe.min.js " + AXE_VERSION, pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        out = subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--json", "--pack-destination", str(folder)],
                             capture_output=True, text=True, timeout=180, cwd=folder, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.fail(f"could not fetch axe-core {AXE_VERSION} with npm pack: {detail.strip()[-600:]}", pytrace=False)
    tgz = folder / json.loads(out.stdout)[0]["filename"]
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None, "axe-core package without axe.min.js"
        data = member.read()
    tgz.unlink()
    got = hashlib.sha256(data).hexdigest()
    if got != AXE_SHA256:
        pytest.fail(f"axe-core {AXE_VERSION} from npm has sha256 {got}, expected {AXE_SHA256}", pytrace=False)
    target.write_bytes(data)
    return target


@pytest.fixture(scope="session")
def axe_js(request, tmp_path_factory) -> str:
    env = os.environ.get("BASTION_AXE_JS")
    if env:
        path = Path(env)
        if not path.is_file():
            pytest.fail(f"BASTION_AXE_JS={env} is not a file", pytrace=False)
        return path.read_text(encoding="utf-8")
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    folder = Path(cache.mkdir("axe-core")) if cache is not None else tmp_path_factory.mktemp("axe-core")
    return _fetch_axe(folder).read_text(encoding="utf-8")


def axe_violations(page, axe_source: str) -> list[str]:
    """Serious and critical axe-core violations on the page as it is now, one line each."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)  # evaluated by the DevTools protocol: the page's CSP does not apply to it
    result = page.evaluate("""async (tags) => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}));
    }""", AXE_TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']} -> {v['nodes']}" for v in result if v["impact"] in BLOCKING]


def shot(page, name: str, kind: str) -> None:
    if SCREENSHOTS:
        page.evaluate("document.getElementById('toast').hidden = true")
        suffix = "" if kind == "desktop" else "-phone"
        page.screenshot(path=str(DOCS / f"ui-{name}{suffix}.png"))


def set_passwords(served) -> None:
    served.app.state.server.accounts.set_password("erin", ERIN_PW)


class _AbstainOn:
    """The real answerer, except that a question with ``word`` in it gets an abstention."""

    def __init__(self, answerer, word: str):
        self.answerer, self.word = answerer, word

    def ask(self, question, principal, **kw):
        from bastion.generation.results import Answer

        if self.word not in question:
            return self.answerer.ask(question, principal, **kw)
        return Answer(answer="Not found in the sources you can access.", abstained=True, decision="abstained",
                      reason="weak evidence: best sentence scores 0.120 < answer.min_evidence 0.5", citations=[],
                      lineage_id="0" * 32, question=question, rewritten_question=None, language="en", mode="extract",
                      grounded=False)


def abstain_on(served, word: str) -> None:
    from bastion.generation.answer import Assistant

    real = served.ws.answerer_for

    def answerer_for(name):
        chosen = real(name)
        return Assistant(answerer=_AbstainOn(chosen.answerer, word), sources=chosen.sources)

    served.ws.answerer_for = answerer_for


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_every_page_passes_axe(site, pages, served, axe_js, kind):  # noqa: F811 - fixtures
    """Each page and dialog, in the state a user sees it, has no serious or critical axe-core violation
    and no horizontal scrolling; the screenshots of docs/ui.md are taken on the way."""
    set_passwords(served)
    abstain_on(served, "cat")
    size = WIDTHS[kind]
    found: dict[str, list[str]] = {}

    def check(page, name):
        page.wait_for_timeout(150)  # let transitions settle
        found[name] = axe_violations(page, axe_js)
        assert no_horizontal_overflow(page), f"{name} scrolls sideways at {size['width']} px"
        shot(page, name, kind)

    page = pages.new(**size)
    page.goto(site + "/")
    expect(page.locator("#login-form")).to_be_visible()
    check(page, "login")

    # member: chat with an answer and its passage, the saved chats, search with the viewer, a refusal
    login(page, site, "alice", ALICE_PW)
    ask(page, "What was the Q3 2026 revenue?")
    ask(page, "What is the hotel cost limit per night in Europe?")
    ask(page, "Who feeds the office cat?")
    expect(page.locator(".turn-answer.abstained .answer-message")).to_be_visible()
    check(page, "chat")
    page.locator(".turn-answer").first.locator("button.cite").click()
    expect(page.locator("#passage-body mark")).to_be_visible()
    check(page, "viewer")
    page.locator("#passage-close").click()
    if kind == "phone":
        page.locator("#chats-toggle").click()
        expect(page.locator("#chat-sidebar")).to_be_visible()
        check(page, "chats")
        page.keyboard.press("Escape")
    page.locator('#nav a[data-view="search"]').click()
    expect(page.locator("#search-results .result").first).to_be_visible()
    check(page, "documents")
    page.fill("#search-q", "hotel night Europe")
    page.press("#search-q", "Enter")
    expect(page.locator("#search-results .result-snippet mark").first).to_be_visible()
    check(page, "search")
    page.locator("#search-results .result-open").first.click()
    expect(page.locator("#passage-body mark").first).to_be_visible()
    check(page, "search-viewer")
    page.goto(site + "/#admin")
    expect(page.locator("#view-forbidden")).to_be_visible()
    check(page, "forbidden")

    # editor: add documents
    editor = pages.new(**size)
    login(editor, site, "erin", ERIN_PW)
    editor.locator('#nav a[data-view="upload"]').click()
    expect(editor.locator("#upload-source option")).not_to_have_count(0)
    editor.set_input_files("#upload-file", files=[{"name": "parking.md", "mimeType": "text/markdown",
                                                   "buffer": b"# Parking\n\nStaff park in garage B.\n"}])
    editor.fill("#upload-folder", "hr")
    editor.click("#upload-submit")
    expect(editor.locator('.upload-item[data-state="indexed"]')).to_be_visible(timeout=30_000)
    check(editor, "upload")

    # admin: every admin page, and a dialog of each kind
    admin = pages.new(**size)
    login(admin, site, "root", ADMIN_PW)
    for view, ready in (("sources", '#sources-table tr[data-source="docs"]'), ("health", "#health-sources tbody tr"),
                        ("eval", "#eval-runs tbody tr"), ("admin", '#users-table tr[data-user="alice"]'),
                        ("audit", "#audit-table tbody tr")):
        admin.goto(f"{site}/#{view}")
        expect(admin.locator(ready).first).to_be_visible()
        check(admin, view)
    admin.goto(f"{site}/#sources")
    admin.locator("#source-add").click()
    expect(admin.locator("dialog[open]")).to_be_visible()
    check(admin, "source-dialog")
    admin.keyboard.press("Escape")
    admin.goto(f"{site}/#admin")
    admin.get_by_role("button", name="Delete user bob").click()
    expect(admin.locator("dialog[open]")).to_contain_text("Delete user bob?")
    check(admin, "confirm-dialog")
    admin.keyboard.press("Escape")

    bad = {name: v for name, v in found.items() if v}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
    assert len(found) >= 15


def focused(page) -> dict:
    return page.evaluate("""() => {
        const a = document.activeElement;
        const s = getComputedStyle(a);
        return {id: a.id, tag: a.tagName, text: (a.textContent || '').trim().slice(0, 60),
                label: a.getAttribute('aria-label') || '', outline: s.outlineStyle, outlineWidth: s.outlineWidth,
                inDialog: !!a.closest('dialog'), inPanel: !!a.closest('#passage-panel')};
    }""")


def tab_to(page, predicate, limit=40, back=False) -> dict:
    """Press Tab (Shift+Tab) until the focused element matches; fails after ``limit`` presses."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        f = focused(page)
        if predicate(f):
            return f
    raise AssertionError(f"focus never reached the element; last: {focused(page)}")


def test_keyboard_only(site, pages, served):  # noqa: F811 - fixtures
    """Sign in, ask, open the cited passage and close it, rename a chat in a dialog, search and open a
    result: with the keyboard only, a visible focus ring on each stop, dialogs keeping the focus and
    giving it back."""
    page = pages.new(1280, 800)
    page.goto(site + "/")
    expect(page.locator("#login-user")).to_be_focused()
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type(ALICE_PW)
    page.keyboard.press("Enter")
    expect(page.locator("#who-user")).to_have_text("alice")
    expect(page.locator("#question")).to_be_focused()

    page.keyboard.type("What was the Q3 2026 revenue?")
    page.keyboard.press("Enter")
    card = page.locator(".turn-answer").last
    expect(card).to_have_attribute("data-decision", "extracted", timeout=30_000)
    expect(page.locator("#question")).to_be_focused()

    # Shift+Tab back from the question box to the answer's citation; Enter opens the passage
    f = tab_to(page, lambda f: f["text"] == "[1]" and f["tag"] == "BUTTON", back=True)
    assert f["outline"] != "none" and f["outlineWidth"] != "0px", f  # the focus is visible
    page.keyboard.press("Enter")
    expect(page.locator("#passage-panel")).to_be_visible()
    expect(page.locator("#passage-close")).to_be_focused()
    expect(page.locator("#passage-body mark")).to_contain_text("48.2 million")
    page.keyboard.press("Escape")
    expect(page.locator("#passage-panel")).to_be_hidden()
    assert focused(page)["text"] == "[1]"  # back where the reader was

    # rename the saved chat: its button opens a dialog that holds the focus; Escape gives it back
    expect(page.locator("#conv-list .conv-item")).to_have_count(1)
    f = tab_to(page, lambda f: f["label"].startswith("Rename chat"), back=True, limit=60)
    assert f["outline"] != "none", f
    page.keyboard.press("Enter")
    dialog = page.locator("dialog[open]")
    expect(dialog).to_be_visible()
    expect(dialog.locator("input")).to_be_focused()
    for _ in range(6):  # Tab cycles inside the dialog
        page.keyboard.press("Tab")
        assert focused(page)["inDialog"], focused(page)
    for _ in range(6):
        page.keyboard.press("Shift+Tab")
        assert focused(page)["inDialog"], focused(page)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    assert focused(page)["label"].startswith("Rename chat"), focused(page)
    page.keyboard.press("Enter")
    expect(page.locator("dialog[open] input")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type("Revenue questions")
    page.keyboard.press("Enter")
    expect(page.locator("#conv-list .conv-title")).to_have_text("Revenue questions")
    expect(page.locator("#chat-title")).to_have_text("Revenue questions")

    # search and open a result with the keyboard
    page.goto(site + "/#search")
    expect(page.locator("#search-q")).to_be_focused()
    page.keyboard.type("hotel Europe")
    page.keyboard.press("Enter")
    expect(page.locator("#search-results .result").first).to_contain_text("hr/travel.md")
    f = tab_to(page, lambda f: f["tag"] == "BUTTON" and "result-open" in page.evaluate("document.activeElement.className"))
    assert f["outline"] != "none", f
    page.keyboard.press("Enter")
    expect(page.locator("#passage-body mark").first).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#passage-panel")).to_be_hidden()
    # the first stop of the page is "Skip to content", which jumps past the navigation
    page.locator("#search-q").focus()
    f = tab_to(page, lambda f: f["text"] == "Skip to content", back=True)
    assert f["outline"] != "none", f
    page.keyboard.press("Enter")
    assert focused(page)["id"] == "main"


def test_phone_sheets_keep_and_return_focus(site, pages):  # noqa: F811 - fixtures
    """On a phone the chat list and the passage are full-screen sheets: Tab stays inside, Escape closes
    them and the focus goes back to what opened them."""
    page = pages.new(390, 844, is_mobile=True, has_touch=True)
    login(page, site, "alice", ALICE_PW)
    ask(page, "What was the Q3 2026 revenue?")
    expect(page.locator("#chat-sidebar")).to_be_hidden()
    page.locator("#chats-toggle").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#chat-sidebar")).to_be_visible()
    expect(page.locator("#chats-toggle")).to_have_attribute("aria-expanded", "true")
    for _ in range(8):
        page.keyboard.press("Tab")
        assert page.evaluate("!!document.activeElement.closest('#chat-sidebar')")
    page.keyboard.press("Escape")
    expect(page.locator("#chat-sidebar")).to_be_hidden()
    expect(page.locator("#chats-toggle")).to_be_focused()

    cite = page.locator(".turn-answer button.cite").first
    cite.focus()
    page.keyboard.press("Enter")
    panel = page.locator("#passage-panel")
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    assert box["x"] == 0 and box["width"] == 390
    for _ in range(8):
        page.keyboard.press("Tab")
        assert focused(page)["inPanel"], focused(page)
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cite).to_be_focused()
