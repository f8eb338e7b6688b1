"""Finding 4: uploads land only in folders the uploader may read, never replace a file the
uploader may not read, never create files where they may not read, never write through a link."""
from __future__ import annotations

from pathlib import Path

from tests.server.conftest import auth


def _root(served) -> Path:
    return Path(served.ws.sources.get("docs").config["path"])


def _upload(client, key, path, text="# Poison\n\nPOISON-CANARY-777 replaced the minutes.\n"):
    return client.post("/api/v1/sources/docs/documents", headers=auth(key),
                       files={"file": (Path(path).name, text.encode())}, data={"path": path})


def test_an_uploader_cannot_replace_or_plant_files_in_a_folder_they_cannot_read(client, served):
    root = _root(served)
    q3 = (root / "finance" / "q3.md").read_bytes()
    erin = served.keys["erin"]  # editor, staff: not in finance
    r = _upload(client, erin, "finance/q3.md")
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    assert (root / "finance" / "q3.md").read_bytes() == q3
    assert _upload(client, erin, "finance/new.md").status_code == 403
    assert _upload(client, erin, "finance/sub/new.md").status_code == 403
    assert not (root / "finance" / "new.md").exists() and not (root / "finance" / "sub").exists()
    # positive controls: into folders erin reads, new and existing files alike, and a new folder
    for path in ("hr/notice.md", "hr/travel.md", "uploads/2027/notice.md"):
        r = _upload(client, erin, path, "# Notice\n\nThe canteen closes at 15:00 on Fridays.\n")
        assert r.status_code == 202, r.text
        assert (root / path).read_text().endswith("Fridays.\n")


def test_a_finance_editor_may_upload_into_the_finance_folder(client, served):
    served.ws.directory.add_user("fred", groups=["finance", "staff"], role="editor")
    key = served.app.state.server.accounts.create_key("fred", name="t")[1]
    r = _upload(client, key, "finance/q4.md", "# Q4\n\nQ4 revenue forecast EUR 51 million.\n")
    assert r.status_code == 202, r.text
    job = served.app.state.server.jobs.wait(r.json()["job"]["id"], timeout=60)
    assert job["status"] == "completed"
    hits = client.post("/api/v1/search", json={"query": "Q4 revenue forecast"}, headers=auth(served.keys["alice"])).json()["hits"]
    assert "finance/q4.md" in {h["path"] for h in hits}
    hits = client.post("/api/v1/search", json={"query": "Q4 revenue forecast"}, headers=auth(served.keys["bob"])).json()["hits"]
    assert "finance/q4.md" not in {h["path"] for h in hits}


def test_an_upload_never_writes_through_a_link(client, served):
    root = _root(served)
    q3 = (root / "finance" / "q3.md").read_bytes()
    (root / "hr" / "minutes.md").symlink_to("../finance/q3.md")
    (root / "hr" / "fin").symlink_to("../finance", target_is_directory=True)
    erin = served.keys["erin"]
    for path in ("hr/minutes.md", "hr/fin/q3.md", "hr/fin/planted.md"):
        r = _upload(client, erin, path)
        assert r.status_code in (400, 403), (path, r.status_code, r.text)
    assert (root / "finance" / "q3.md").read_bytes() == q3
    assert not (root / "finance" / "planted.md").exists()
    assert (root / "hr" / "minutes.md").is_symlink()  # the link itself is left as it was
    assert _upload(client, erin, "hr/minutes2.md").status_code == 202  # positive control


def test_an_upload_cannot_create_an_acl_file_or_a_hidden_folder(client, served):
    """A folder named .bastion-acl would withdraw the folder above it for everyone; hidden names
    are refused at every level of the path."""
    root = _root(served)
    erin = served.keys["erin"]
    for path in ("hr/.bastion-acl", "hr/.bastion-acl/x.md", ".hidden/x.md", "hr/.git/x.md"):
        assert _upload(client, erin, path).status_code == 400, path
    assert not (root / "hr" / ".bastion-acl").exists() and not (root / ".hidden").exists()
    hits = client.post("/api/v1/search", json={"query": "hotel night Europe"}, headers=auth(served.keys["bob"])).json()["hits"]
    assert "hr/travel.md" in {h["path"] for h in hits}  # positive control: hr is still readable
