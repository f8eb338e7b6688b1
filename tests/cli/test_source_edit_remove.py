"""``bastion source edit`` changes a source's settings (checked first), ``source remove`` takes it and its
documents out of the index; both audited."""
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
    write(tmp_path / "a" / "travel.md", "# Travel\n\nThe hotel cap is 180 euro per night.\n")
    write(tmp_path / "b" / "pay.md", "# Pay\n\nSalaries are paid on the 25th.\n")
    ws.sources.add_folder("a", tmp_path / "a", acl="everyone")
    ws.sources.add_folder("b", tmp_path / "b", acl="everyone")
    ws.sync()
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    return h


def _run(home, *args: str, stdin: str | None = None):
    return CliRunner().invoke(cli.app, ["--home", str(home), *args], env={"COLUMNS": "300"}, input=stdin)


def _paths(home) -> set[str]:
    ws = Workspace.open(home, embedder=HashEmbedder())
    try:
        return {h.path for h in ws.search("hotel cap salaries paid", ws.principal("dave"), 10)}
    finally:
        ws.close()


def test_edit_checks_then_stores_and_the_next_sync_applies_it(home, tmp_path):
    bad = _run(home, "source", "edit", "a", "--path", str(tmp_path / "missing"))
    assert bad.exit_code == 2 and "does not exist" in bad.output
    assert _run(home, "source", "edit", "a").exit_code == 2  # nothing to change
    ok = _run(home, "source", "edit", "a", "--acl", "group:finance", "--json")
    assert ok.exit_code == 0 and json.loads(ok.output) == {"name": "a", "changed": ["acl"]}
    assert _run(home, "sync", "a").exit_code == 0
    assert _paths(home) == {"pay.md"}  # dave (staff) no longer reads a; b, the control, still there
    audit = json.loads(_run(home, "audit", "list", "--json").output)
    assert any(e["action"] == "source.edit" and e["target"] == "a" for e in audit)


def test_remove_asks_then_takes_the_source_and_its_documents_out(home):
    assert _paths(home) == {"travel.md", "pay.md"}
    kept = _run(home, "source", "remove", "a", stdin="n\n")
    assert kept.exit_code == 1 and _paths(home) == {"travel.md", "pay.md"}
    assert _run(home, "source", "remove", "nope", "--yes").exit_code == 2
    gone = _run(home, "source", "remove", "a", "--yes", "--json")
    assert gone.exit_code == 0 and json.loads(gone.output)["documents"] == 1
    assert _paths(home) == {"pay.md"}
    assert [r["name"] for r in json.loads(_run(home, "source", "list", "--json").output)] == ["b"]
