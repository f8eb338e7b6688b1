"""Finding 5: a sync job shown to a non-admin holds only the outcome of their own upload: no
other paths, no counts of documents they cannot read, no traceback or failure message."""
from __future__ import annotations

from pathlib import Path

from tests.server.conftest import auth

NOTICE = "# Notice\n\nThe canteen closes at 15:00 on Fridays.\n"


def _upload(client, key, path, data: bytes):
    r = client.post("/api/v1/sources/docs/documents", headers=auth(key), files={"file": (Path(path).name, data)},
                    data={"path": path})
    assert r.status_code == 202, r.text
    return r.json()


def test_an_uploaders_job_view_shows_only_their_file(client, served):
    root = Path(served.ws.sources.get("docs").config["path"])
    (root / "finance" / "2027_layoff_plan_CONFIDENTIAL.pdf").write_bytes(b"not really a pdf")
    up = _upload(client, served.keys["erin"], "hr/notice.md", NOTICE.encode())
    assert "report" not in up["job"] and "layoff" not in str(up)
    served.app.state.server.jobs.wait(up["job"]["id"], timeout=60)
    mine = client.get(f"/api/v1/sync/jobs/{up['job']['id']}", headers=auth(served.keys["erin"]))
    assert mine.status_code == 200
    body = mine.json()
    assert body["status"] == "completed" and body["upload"] == {"path": "hr/notice.md", "outcome": "indexed"}
    text = mine.text
    assert "layoff" not in text and "finance" not in text and "documents_" not in text and "report" not in body
    # positive control: the admin sees the whole job, the other file's error included
    full = client.get(f"/api/v1/sync/jobs/{up['job']['id']}", headers=auth(served.keys["root"])).json()
    assert any("layoff" in (e["file"] or "") for e in full["report"]["errors"])


def test_an_uploaders_failed_file_is_reported_to_them(client, served):
    up = _upload(client, served.keys["erin"], "hr/broken.pdf", b"%PDF-1.4 this is not a pdf")
    served.app.state.server.jobs.wait(up["job"]["id"], timeout=60)
    body = client.get(f"/api/v1/sync/jobs/{up['job']['id']}", headers=auth(served.keys["erin"])).json()
    assert body["upload"]["path"] == "hr/broken.pdf" and body["upload"]["outcome"] == "failed"
    assert body["upload"]["reason"]


def test_a_failed_job_shows_no_failure_message_to_a_member(client, served, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("cannot parse /srv/share/finance/2027_layoff_plan_CONFIDENTIAL.pdf")

    monkeypatch.setattr(served.ws, "sync", boom)
    up = _upload(client, served.keys["erin"], "hr/notice.md", NOTICE.encode())
    job = served.app.state.server.jobs.wait(up["job"]["id"], timeout=60)
    assert job["status"] == "failed"
    mine = client.get(f"/api/v1/sync/jobs/{up['job']['id']}", headers=auth(served.keys["erin"]))
    assert mine.json()["status"] == "failed" and "layoff" not in mine.text and "Traceback" not in mine.text
    assert mine.json()["upload"]["outcome"] == "not indexed"
    full = client.get(f"/api/v1/sync/jobs/{up['job']['id']}", headers=auth(served.keys["root"])).json()
    assert "layoff" in full["error"]  # positive control: the admin sees why
