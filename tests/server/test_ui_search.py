"""The Search page and the document viewer in a real headless Chromium against a live server: documents
(not answers) with the search words marked, only what the user may read, the viewer with the passage
highlighted, the whole document, and the original file to open or download."""
from __future__ import annotations

from tests.server.conftest import ALICE_PW

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import browser, configured, expect, login, no_horizontal_overflow, pages, site  # noqa: F401

BOB_PW = "bob-password-1"


def test_search_finds_a_document_and_opens_it(site, pages, served, tmp_path):  # noqa: F811 - fixtures
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    page.click('#nav a[data-view="search"]')
    expect(page.locator("#search-q")).to_be_focused()
    # before a search: the documents she may read
    expect(page.locator("#search-heading")).to_have_text("Your documents")
    expect(page.locator("#search-results .result-doc")).to_have_count(3)
    expect(page.locator("#search-status")).to_have_text("3 documents you can read. Search to find what is inside them.")

    page.fill("#search-q", "hotel costs per night")
    page.press("#search-q", "Enter")
    assert page.evaluate("location.hash") == "#search/hotel%20costs%20per%20night"
    first = page.locator("#search-results .result").first
    expect(first.locator(".result-meta")).to_contain_text("hr/travel.md")
    expect(first.locator(".result-snippet")).to_contain_text("Hotel costs are capped at EUR 180 per night in Europe.")
    expect(first.locator(".result-snippet mark")).to_have_text(["Hotel", "costs", "night"])  # "per" is a stop word
    expect(page.locator("#search-status")).to_contain_text("match “hotel costs per night”")

    # the viewer: the passage with the words marked, in its document's text
    first.locator(".result-open").click()
    panel = page.locator("#passage-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#passage-title")).to_have_text(first.locator(".result-open").inner_text())
    expect(page.locator("#passage-meta")).to_contain_text("hr/travel.md")
    expect(page.locator("#passage-body mark")).to_have_text(["Hotel", "costs", "night"])
    expect(page.locator("#passage-body")).to_contain_text("Travel policy")

    # the whole document, the passage marked in it
    page.get_by_role("button", name="Whole document").click()
    expect(page.get_by_role("button", name="Whole document")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#passage-body .passage-current mark").first).to_have_text("Hotel")

    # the original file: opens in a new tab, or downloads
    doc_id = served.docs["hr/travel.md"]
    link = page.locator("#passage-original")
    assert link.get_attribute("href") == f"/api/v1/documents/{doc_id}/original"
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener"
    original = page.request.get(site + link.get_attribute("href"))  # the session cookie authenticates it
    assert original.status == 200
    assert original.body() == (tmp_path / "docs" / "hr" / "travel.md").read_bytes()
    with page.expect_download() as got:
        page.locator("#passage-download").click()
    assert got.value.suggested_filename == "travel.md"
    assert open(got.value.path(), "rb").read() == (tmp_path / "docs" / "hr" / "travel.md").read_bytes()

    page.locator("#passage-close").click()
    expect(panel).to_be_hidden()

    # a document from the list opens whole
    page.goto(site + "/#search")
    page.locator("#search-results .result-doc", has_text="finance/q3.md").locator(".result-open").click()
    expect(page.locator("#passage-body")).to_contain_text("Q3 2026 revenue was EUR 48.2 million, up 9 percent.")
    expect(page.locator("#passage-original")).to_be_visible()

    # a Chinese search marks the Chinese words
    page.goto(site + "/#search/" + "住宿费用")
    first = page.locator("#search-results .result").first
    expect(first.locator(".result-meta")).to_contain_text("hr/报销.md")
    expect(first.locator(".result-snippet mark")).to_have_text(["住宿费用"])


def test_search_shows_only_what_the_user_may_read(site, pages, served):  # noqa: F811 - fixtures
    served.app.state.server.accounts.set_password("bob", BOB_PW)
    alice = pages.new()  # positive control: alice (finance) finds the Q3 results
    login(alice, site, "alice", ALICE_PW)
    alice.goto(site + "/#search/revenue")
    expect(alice.locator("#search-results .result").first).to_contain_text("finance/q3.md")

    bob = pages.new()
    login(bob, site, "bob", BOB_PW)
    bob.goto(site + "/#search/revenue")
    expect(bob.locator("#search-status")).not_to_have_text("Searching…")
    expect(bob.locator("#search-results")).not_to_contain_text("finance/q3.md")
    expect(bob.locator("#search-results")).not_to_contain_text("48.2")
    bob.goto(site + "/#search")
    expect(bob.locator("#search-results .result-doc")).to_have_count(2)
    # the original of a document he may not read answers like one that does not exist
    doc_id = served.docs["finance/q3.md"]
    assert bob.request.get(f"{site}/api/v1/documents/{doc_id}/original").status == 404


def test_search_on_a_phone(site, pages):  # noqa: F811 - fixtures
    page = pages.new(390, 844, is_mobile=True, has_touch=True)
    login(page, site, "alice", ALICE_PW)
    page.goto(site + "/#search")
    page.fill("#search-q", "Q3 revenue percent")
    page.press("#search-q", "Enter")
    result = page.locator("#search-results .result").first
    expect(result).to_contain_text("finance/q3.md")
    assert no_horizontal_overflow(page)
    result.locator(".result-open").tap()
    panel = page.locator("#passage-panel")
    expect(panel.locator("mark").first).to_be_visible()
    box = panel.bounding_box()
    assert box["x"] == 0 and box["width"] == 390  # a full-screen sheet
    assert no_horizontal_overflow(page)
    page.locator("#passage-close").tap()
    expect(panel).to_be_hidden()
