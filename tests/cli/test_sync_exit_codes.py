"""``bastion sync`` exit codes: 0 all good (skips by design included), 4 some documents failed (the rest
is published), 3 quarantined (wins over 4). Cron and CI can tell a broken sync from a good one."""
from __future__ import annotations

import json
import os
import socket

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write


@pytest.fixture
def home(tmp_path, monkeypatch):
    write(tmp_path / "docs" / "travel.md", "# Travel\n\nThe hotel cap is 180 euro per night.\n")
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.\n")
    h = tmp_path / "ws"
    Workspace.init(h)
    ws = Workspace.open(h, embedder=HashEmbedder())
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", tmp_path / "docs", acl="everyone", include=["*"])
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    return h


def _sync(home, *args: str):
    return CliRunner().invoke(cli.app, ["--home", str(home), "sync", *args])


def test_all_documents_indexed_exits_0(home):
    r = _sync(home)
    assert r.exit_code == 0, r.output
    assert "2 added" in r.output and "0 failed" in r.output


def test_skips_by_design_are_listed_and_exit_0(home, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "empty.md", b"")
    write(docs / "blank.txt", "  \n\n ")
    write(docs / "logo.png", b"\x89PNG\r\n\x1a\n")  # named by the include pattern, but no parser reads it
    os.mkfifo(docs / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(docs / "sock.md"))
    (docs / "link.md").symlink_to("travel.md")
    try:
        r = _sync(home, "--json")
    finally:
        sock.close()
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert {e["file"]: e["reason"] for e in report["skipped"]} == {
        "empty.md": "empty file", "blank.txt": "empty file", "logo.png": "unsupported file type 'png'",
        "pipe.md": "named pipe, not a regular file", "sock.md": "socket, not a regular file", "link.md": "link"}
    assert report["documents_failed"] == 0 and report["documents_added"] == 2


def test_failed_documents_exit_4_and_the_rest_is_published(home, tmp_path):
    write(tmp_path / "docs" / "broken.pdf", b"%PDF-1.7\n this is not really a pdf")
    write(tmp_path / "docs" / "binary.txt", b"\x00\x01\x02 not text")
    r = _sync(home)
    assert r.exit_code == 4, r.output
    assert "2 added" in r.output and "2 failed" in r.output
    assert "failed broken.pdf: corrupt PDF" in r.output and "failed binary.txt: binary content" in r.output
    r = _sync(home, "--json")  # unchanged and still broken: still a failure
    assert r.exit_code == 4
    report = json.loads(r.stdout)
    assert report["documents_failed"] == 2 and report["documents_unchanged"] == 2
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert "travel.md" in {h.path for h in ws.search("hotel cap", ws.principal("bob"))}  # published anyway
    (tmp_path / "docs" / "broken.pdf").unlink()
    (tmp_path / "docs" / "binary.txt").unlink()
    assert _sync(home).exit_code == 0


def test_quarantine_exits_3_even_when_documents_also_failed(home, tmp_path):
    for i in range(10):
        write(tmp_path / "docs" / f"n{i}.md", f"# Note {i}\n\nThe canteen serves dish {i}.\n")
    assert _sync(home).exit_code == 0
    for i in range(10):
        (tmp_path / "docs" / f"n{i}.md").unlink()
    write(tmp_path / "docs" / "broken.pdf", b"%PDF-1.7 garbage")
    r = _sync(home, "docs")
    assert r.exit_code == 3 and "QUARANTINED" in r.output


def test_the_exit_codes_are_in_the_help(home):
    r = CliRunner().invoke(cli.app, ["sync", "--help"], env={"COLUMNS": "300"})
    text = " ".join(r.output.replace("│", " ").split())
    for code in ("0 every document", "3 a sync was quarantined", "4 published, but some documents failed",
                 "130 / 143"):
        assert code in text


@pytest.mark.model
def test_the_server_takes_exit_4_of_its_child_sync_as_a_completed_job(home, tmp_path):
    """API syncs run `bastion sync --json` as a child process (default embedder): a failed document makes
    it exit 4, and the job still gets the report, with the failure in it."""
    from bastion.server.jobs import SyncJobs

    write(tmp_path / "docs" / "broken.pdf", b"%PDF-1.7 garbage")
    reports = SyncJobs(Workspace.open(home))._run_child(None, lambda *_: None)
    [report] = reports
    assert report["documents_added"] == 2 and report["documents_failed"] == 1
    assert report["errors"][0]["file"] == "broken.pdf"
