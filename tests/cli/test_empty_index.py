"""Searching or asking when the index holds no documents says so, and how to fill it, instead of
"no results that dave may read" (which points at the ACL). The Python API exposes the same:
``Workspace.index_status()``."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "ws"
    Workspace.init(h)
    ws = Workspace.open(h, embedder=HashEmbedder())
    ws.directory.add_user("dave", groups=["staff"])
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    return h


def _run(home, *args: str):
    return CliRunner().invoke(cli.app, ["--home", str(home), *args], env={"COLUMNS": "300"})


def _add_source(home, tmp_path, acl: str = "everyone") -> None:
    write(tmp_path / "docs" / "travel.md", "# Travel\n\nThe hotel cap is 180 euro per night.\n")
    Workspace.open(home, embedder=HashEmbedder()).sources.add_folder("docs", tmp_path / "docs", acl=acl)


def test_search_without_any_source_says_how_to_add_one(home):
    r = _run(home, "search", "hotel cap", "--as", "dave")
    assert r.exit_code == 0
    assert "the index is empty: no source has been added yet" in r.output and "bastion source add" in r.output
    assert "no results that dave may read" not in r.output


def test_search_and_ask_before_the_first_sync_say_run_bastion_sync(home, tmp_path):
    _add_source(home, tmp_path)
    r = _run(home, "search", "hotel cap", "--as", "dave")
    assert "the index is empty: nothing has been synced yet; run `bastion sync`" in r.output
    assert "no results that dave may read" not in r.output
    r = _run(home, "ask", "What is the hotel cap?", "--as", "dave", "--mode", "extract")
    assert r.exit_code == 0 and "No answer" in r.output and "nothing has been synced yet" in r.output
    r = _run(home, "search", "hotel cap", "--as", "dave", "--json")
    assert json.loads(r.stdout) == [] and "the index is empty" in r.stderr  # stdout stays JSON
    r = _run(home, "search", "hotel cap", "--as", "dave", "--source", "docs")
    assert "source 'docs' holds no indexed documents: nothing has been synced yet; run `bastion sync docs`" in r.output


def test_a_synced_index_the_user_cannot_read_says_no_results_for_them(home, tmp_path):
    _add_source(home, tmp_path, acl="group:finance")
    assert _run(home, "sync").exit_code == 0
    r = _run(home, "search", "hotel cap", "--as", "dave")
    assert "no results that dave may read" in r.output and "index is empty" not in r.output


def test_a_sync_that_indexed_nothing_says_so(home, tmp_path):
    _add_source(home, tmp_path)
    (tmp_path / "docs" / "travel.md").write_bytes(b"%PDF-1.7 garbage")
    (tmp_path / "docs" / "travel.md").rename(tmp_path / "docs" / "travel.pdf")
    assert _run(home, "sync").exit_code == 4
    r = _run(home, "search", "hotel cap", "--as", "dave")
    assert "the index is empty: the last sync indexed no documents" in r.output


def test_the_workspace_exposes_the_flag_and_the_hint(home, tmp_path):
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert ws.index_status().empty and "no source" in (ws.index_status().hint or "")
    _add_source(home, tmp_path)
    status = ws.index_status()
    assert status.empty and not status.synced and status.sources == ("docs",)
    ws.sync()
    status = ws.index_status("docs")
    assert (status.empty, status.documents, status.hint) == (False, 1, None)
