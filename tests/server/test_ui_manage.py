"""Admin management in the web UI, in a real headless Chromium against a live server: add, edit, sync and
remove a source (with confirmation) and see what its last sync could not read; delete a user and reset
a password, each confirmed in a dialog."""
from __future__ import annotations

import httpx

from tests.conftest import write
from tests.server.conftest import ADMIN_PW, ALICE_PW, auth

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import browser, configured, expect, login, no_horizontal_overflow, pages, site  # noqa: F401


def test_admin_adds_edits_syncs_and_removes_a_source(site, pages, served, tmp_path):  # noqa: F811 - fixtures
    folder = tmp_path / "handbook"
    write(folder / "welcome.md", "# Welcome\n\nThe canteen opens at 8 in the morning.\n")
    write(folder / "broken.pdf", "%PDF-1.4 not really a pdf")

    page = pages.new()
    login(page, site, "root", ADMIN_PW)
    page.click('#nav a[data-view="sources"]')
    page.get_by_role("button", name="Add a source").click()
    dialog = page.locator("dialog[open]")
    expect(dialog.get_by_label("Name")).to_be_focused()
    dialog.get_by_label("Name").fill("handbook")
    expect(dialog.get_by_label("Database URL")).to_be_hidden()  # folder fields only
    dialog.get_by_label("Folder path").fill(str(folder))
    dialog.get_by_label("Who may read").fill("everyone")
    dialog.get_by_role("button", name="Add source").click()
    expect(dialog).to_have_count(0)
    row = page.locator('#sources-table tr[data-source="handbook"]')
    expect(row).to_contain_text("folder")
    expect(row.locator(".source-last")).to_have_text("never synced")
    assert served.ws.sources.get("handbook").config["acl"] == "everyone"

    # a bad value is refused inside the dialog, which stays open
    page.get_by_role("button", name="Add a source").click()
    dialog.get_by_label("Name").fill("nowhere")
    dialog.get_by_label("Folder path").fill(str(tmp_path / "no-such-folder"))
    dialog.get_by_label("Who may read").fill("everyone")
    dialog.get_by_role("button", name="Add source").click()
    expect(dialog.locator(".dialog-status .error")).to_contain_text("no-such-folder")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)

    # sync now: the last sync shows, with the file it could not read
    row.get_by_role("button", name="Sync handbook now").click()
    expect(page.locator("#job-live-text")).to_contain_text("completed", timeout=30_000)
    cell = row.locator(".source-last")
    expect(cell.locator(".badge")).to_have_text("completed")
    expect(cell).to_contain_text("1 document")
    errors = cell.locator("details.source-errors")
    expect(errors.locator("summary")).to_have_text("1 error")
    errors.locator("summary").click()
    expect(errors.locator("li")).to_contain_text("broken.pdf")

    # edit: who may read; saving starts the sync that applies it
    row.get_by_role("button", name="Edit handbook").click()
    expect(dialog.get_by_label("Folder path")).to_have_value(str(folder))
    dialog.get_by_label("Who may read").fill("group:finance")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Source handbook saved; syncing")
    assert served.ws.sources.get("handbook").config["acl"] == "group:finance"
    expect(row).to_contain_text("group:finance")
    expect(page.locator("#job-live-text")).to_contain_text("completed", timeout=30_000)

    # remove: Escape cancels and gives the focus back; the confirmed removal takes it out
    remove = row.get_by_role("button", name="Remove handbook")
    remove.click()
    expect(dialog).to_contain_text("Remove source handbook?")
    expect(dialog).to_contain_text("Its documents disappear from search and answers")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(remove).to_be_focused()
    expect(row).to_be_visible()
    remove.click()
    dialog.get_by_role("button", name="Remove source").click()
    expect(row).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Source handbook removed")
    assert [s.name for s in served.ws.sources.list()] == ["docs"]
    hits = httpx.post(f"{site}/api/v1/search", headers=auth(served.keys["alice"]), json={"query": "canteen"}).json()
    assert all(h["source"] != "handbook" for h in hits["hits"])

    page.set_viewport_size({"width": 390, "height": 844})
    assert no_horizontal_overflow(page)


def test_admin_deletes_a_user_and_resets_a_password(site, pages, served):  # noqa: F811 - fixtures
    page = pages.new()
    login(page, site, "root", ADMIN_PW)
    page.click('#nav a[data-view="admin"]')
    users = page.locator("#users-table tbody")
    expect(users.locator('tr[data-user="root"]').get_by_role("button", name="Delete user root")).to_be_disabled()

    # delete bob: Cancel first, then confirm; his key stops working
    assert httpx.get(f"{site}/api/v1/auth/me", headers=auth(served.keys["bob"])).status_code == 200
    page.get_by_role("button", name="Delete user bob").click()
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("bob can no longer sign in")
    dialog.get_by_role("button", name="Cancel").click()
    expect(users.locator('tr[data-user="bob"]')).to_be_visible()
    page.get_by_role("button", name="Delete user bob").click()
    dialog.get_by_role("button", name="Delete user").click()
    expect(users.locator('tr[data-user="bob"]')).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("User bob deleted")
    assert httpx.get(f"{site}/api/v1/auth/me", headers=auth(served.keys["bob"])).status_code == 401

    # reset alice's password while she is signed in: two different entries are refused first
    alice = pages.new()
    login(alice, site, "alice", ALICE_PW)
    page.get_by_role("button", name="Reset the password of alice").click()
    dialog.get_by_label("New password", exact=True).fill("new-alice-password-2")
    dialog.get_by_label("New password again").fill("something else")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog.locator(".dialog-status")).to_have_text("The two passwords are not the same.")
    dialog.get_by_label("New password again").fill("new-alice-password-2")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Password of alice reset")

    alice.reload()  # her session ended
    expect(alice.locator("#login-form")).to_be_visible()
    alice.fill("#login-user", "alice")
    alice.fill("#login-password", ALICE_PW)
    alice.click("#login-submit")
    expect(alice.locator("#login-error")).to_have_text("wrong username or password")
    alice.fill("#login-password", "new-alice-password-2")
    alice.click("#login-submit")
    expect(alice.locator("#who-user")).to_have_text("alice")
