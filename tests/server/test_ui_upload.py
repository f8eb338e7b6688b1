"""Adding documents from the web UI, in a real headless Chromium against a live server: an editor whom
the source admits uploads a file, sees it uploaded and indexed, and finds it; where she may not read,
the server's refusal is shown; a member is not offered the page at all."""
from __future__ import annotations

import re

from tests.server.conftest import ADMIN_PW, ALICE_PW

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import browser, configured, expect, login, no_horizontal_overflow, pages, site  # noqa: F401

ERIN_PW = "erin-password-1"
PARKING = b"# Parking\n\nStaff park in garage B for EUR 5 per day.\n"


def test_editor_uploads_a_file_and_finds_it(site, pages, served, tmp_path):  # noqa: F811 - fixtures
    served.app.state.server.accounts.set_password("erin", ERIN_PW)
    page = pages.new()
    login(page, site, "erin", ERIN_PW)
    nav = page.locator('#nav a[data-view="upload"]')
    expect(nav).to_have_text("Add documents")
    nav.click()
    expect(page.get_by_label("Add to collection")).to_have_value("docs")
    page.get_by_label("Folder (optional)").fill("hr")
    page.get_by_label("Files").set_input_files(files=[{"name": "parking.md", "mimeType": "text/markdown", "buffer": PARKING}])
    page.click("#upload-submit")

    item = page.locator('.upload-item[data-path="hr/parking.md"]')
    expect(item).to_be_visible()
    expect(item).to_have_attribute("data-state", "indexed", timeout=30_000)
    expect(item.locator(".upload-status")).to_have_text("Ready: hr/parking.md can now be found in Search and in answers.")
    assert (tmp_path / "docs" / "hr" / "parking.md").read_bytes() == PARKING

    # and it can be found
    page.goto(site + "/#search/garage")
    expect(page.locator("#search-results .result").first).to_contain_text("hr/parking.md")

    # a folder she cannot read (finance): the server refuses, and says why
    page.goto(site + "/#upload")
    page.get_by_label("Folder (optional)").fill("finance")
    page.get_by_label("Files").set_input_files(files=[{"name": "plan.md", "mimeType": "text/markdown", "buffer": b"# Plan\n"}])
    page.click("#upload-submit")
    refused = page.locator('.upload-item[data-path="finance/plan.md"]')
    expect(refused).to_have_attribute("data-state", "failed")
    expect(refused.locator(".upload-status")).to_contain_text("Not uploaded: you may not upload into 'finance'")
    assert not (tmp_path / "docs" / "finance" / "plan.md").exists()

    page.set_viewport_size({"width": 390, "height": 844})
    assert no_horizontal_overflow(page)


def test_upload_shows_its_progress(site, pages, served):  # noqa: F811 - fixtures
    """On a slow line the upload's progress shows as it goes (the network throttled to 256 KiB/s)."""
    served.app.state.server.accounts.set_password("erin", ERIN_PW)
    page = pages.new()
    login(page, site, "erin", ERIN_PW)
    page.goto(site + "/#upload")
    expect(page.get_by_label("Add to collection")).to_have_value("docs")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20, "downloadThroughput": -1,
                                                   "uploadThroughput": 256 * 1024})
    body = b"# Minutes\n\n" + b"The committee met and agreed on the plan. " * 25_000  # about 1 MB
    page.get_by_label("Files").set_input_files(files=[{"name": "minutes.md", "mimeType": "text/markdown", "buffer": body}])
    page.click("#upload-submit")
    item = page.locator('.upload-item[data-path="minutes.md"]')
    bar = item.locator("progress")
    expect(item.locator(".upload-status")).to_have_text(re.compile(r"Uploading… ([1-9]|[1-9]\d) %"), timeout=15_000)
    expect(bar).to_be_visible()
    assert 0 < float(bar.get_attribute("value")) < 100
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                   "uploadThroughput": -1})
    expect(item).to_have_attribute("data-state", "indexed", timeout=60_000)
    expect(bar).to_have_count(0)


def test_a_file_that_cannot_be_read_is_reported(site, pages, served):  # noqa: F811 - fixtures
    admin = pages.new()
    login(admin, site, "root", ADMIN_PW)
    admin.goto(site + "/#upload")
    expect(admin.get_by_label("Add to collection")).to_have_value("docs")
    admin.get_by_label("Files").set_input_files(files=[{"name": "broken.pdf", "mimeType": "application/pdf",
                                                        "buffer": b"%PDF-1.4 this is not a pdf"}])
    admin.click("#upload-submit")
    item = admin.locator('.upload-item[data-path="broken.pdf"]')
    expect(item).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(item.locator(".upload-status")).to_contain_text("Uploaded, but it could not be read:")


def test_upload_is_not_offered_to_a_reader(site, pages, served):  # noqa: F811 - fixtures
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    expect(page.locator('#nav a[data-view="search"]')).to_be_visible()
    expect(page.locator('#nav a[data-view="upload"]')).to_be_hidden()
    page.goto(site + "/#upload")
    refusal = page.locator("#view-forbidden")
    expect(refusal).to_be_visible()
    expect(refusal).to_contain_text("Adding documents needs the editor role")
    expect(page.locator("#upload-form")).to_be_hidden()
    # the server refuses a member's upload whatever the UI shows
    status = page.evaluate("""async () => {
        const me = await (await fetch('/api/v1/auth/me')).json();
        const form = new FormData();
        form.append('file', new Blob(['# x\\n']), 'x.md');
        const r = await fetch('/api/v1/sources/docs/documents', {method: 'POST', body: form,
            headers: {'X-CSRF-Token': me.csrf_token}});
        return r.status;
    }""")
    assert status == 403
