"""Finding 3: a ``.bastion-acl`` that is not a regular file (a link, a folder, a pipe, unreadable)
withdraws its subtree with a reported error (fail closed), as an invalid one does."""
from __future__ import annotations

import os

import pytest

from tests.conftest import write


def _seen(ws, query, user):
    return {h.path for h in ws.search(query, ws.principal(user), 20)}


@pytest.mark.parametrize("kind", ["link", "folder", "pipe", "link outside the root"])
def test_an_acl_file_that_is_not_a_regular_file_withdraws_its_subtree(make_ws, tmp_path, kind):
    docs = tmp_path / "docs"
    write(docs / "secret" / ".bastion-acl", "group:finance\n")
    write(docs / "secret" / "budget.md", "# Budget\n\nThe SECRET-BUDGET-991 line is 9 million.\n")
    write(docs / "shared" / "plan.md", "# Plan\n\nThe SYMACL-CANARY-314 budget line is 9 million.\n")
    write(docs / "shared" / "deeper" / ".bastion-acl", "everyone\n")  # a withdrawn subtree stays withdrawn
    write(docs / "shared" / "deeper" / "d.md", "# Deeper\n\nDEEPER-CANARY-27 text.\n")
    write(docs / "public" / "hello.md", "# Hello\n\nThe canteen opens at eight.\n")
    acl = docs / "shared" / ".bastion-acl"
    if kind == "link":
        acl.symlink_to("../secret/.bastion-acl")
    elif kind == "link outside the root":
        write(tmp_path / "elsewhere" / "acl", "everyone\n")
        acl.symlink_to(tmp_path / "elsewhere" / "acl")
    elif kind == "folder":
        acl.mkdir()
    else:
        os.mkfifo(acl)
    ws = make_ws()
    [report] = ws.sync()
    errors = {e["file"]: e["reason"] for e in report.errors}
    assert set(errors) == {"shared/plan.md", "shared/deeper/d.md"}
    assert all("shared/.bastion-acl" in r and "withdrawn" in r for r in errors.values())
    for user in ("alice", "bob"):
        assert not _seen(ws, "SYMACL-CANARY-314 budget line DEEPER-CANARY-27", user) & {"shared/plan.md", "shared/deeper/d.md"}
    # positive controls: the rest of the source is indexed as its own ACLs say
    assert "public/hello.md" in _seen(ws, "canteen opens eight", "bob")
    assert "secret/budget.md" in _seen(ws, "SECRET-BUDGET-991 budget line", "alice")
    assert "secret/budget.md" not in _seen(ws, "SECRET-BUDGET-991 budget line", "bob")


def test_an_unreadable_acl_file_withdraws_its_subtree(make_ws, tmp_path, monkeypatch):
    """Tests run as root, for whom chmod 000 blocks nothing: the read itself is made to fail."""
    from bastion.connectors import filesystem

    docs = tmp_path / "docs"
    write(docs / "locked" / ".bastion-acl", "everyone\n")
    write(docs / "locked" / "x.md", "# X\n\nLOCKED-CANARY-5 text.\n")
    write(docs / "open" / "y.md", "# Y\n\nOPEN-CANARY-6 text.\n")
    real = filesystem.read_beneath

    def failing(root, rel, **kw):
        if rel.endswith(".bastion-acl"):
            raise PermissionError(13, "Permission denied")
        return real(root, rel, **kw)

    monkeypatch.setattr(filesystem, "read_beneath", failing)
    ws = make_ws()
    [report] = ws.sync()
    assert [e["file"] for e in report.errors] == ["locked/x.md"]
    assert "locked/x.md" not in _seen(ws, "LOCKED-CANARY-5", "bob")
    assert "open/y.md" in _seen(ws, "OPEN-CANARY-6", "bob")
