"""Finding 1 (links) and 17 (link swapped in between listing and reading).

A link inside a source never gives its target the ACL of the link's folder: links are not
followed, each is reported as skipped (reason ``link``), and a target inside the source is
indexed at its own place under its own ACL.
"""
from __future__ import annotations

import os

from tests.conftest import write

MERGER = "Project Falcon: the board approved the acquisition of Zyxcorp. The codename is PURPLE-OTTER-77."


def _share(root):
    write(root / "secret" / ".bastion-acl", "group:finance\n")
    write(root / "secret" / "merger.md", f"# Merger\n\n{MERGER}\n")
    write(root / "invalid" / ".bastion-acl", "not a principal\n")
    write(root / "invalid" / "i.md", "# Withdrawn\n\nINVALID-CANARY-555 lives here.\n")
    write(root / "public" / "handbook.md", "# Handbook\n\nOffice hours are nine to five.\n")
    (root / "public" / "link_to_secret.md").symlink_to("../secret/merger.md")
    (root / "public" / "link_to_invalid.md").symlink_to("../invalid/i.md")
    (root / "public" / "secret_folder").symlink_to("../secret", target_is_directory=True)


def _texts(ws, query, user, mode="hybrid"):
    return {(h.path, h.text) for h in ws.search(query, ws.principal(user), 20, mode=mode)}


def test_a_link_to_a_restricted_file_is_skipped_and_the_file_keeps_its_own_acl(make_ws, tmp_path):
    _share(tmp_path / "docs")
    ws = make_ws()
    [report] = ws.sync()
    skipped = {e["file"]: e["reason"] for e in report.skipped}
    assert skipped == {"public/link_to_secret.md": "link", "public/link_to_invalid.md": "link",
                       "public/secret_folder": "link"}
    for mode in ("hybrid", "bm25", "dense"):
        bob = _texts(ws, "Project Falcon Zyxcorp acquisition codename PURPLE-OTTER-77", "bob", mode)
        assert not any("PURPLE-OTTER-77" in text for _, text in bob), mode
        assert not any("INVALID-CANARY-555" in text for _, text in _texts(ws, "INVALID-CANARY-555 withdrawn", "bob", mode))
        # positive controls: bob reads the public folder, alice (finance) reads the merger at its real place
        assert "public/handbook.md" in {p for p, _ in _texts(ws, "office hours handbook", "bob", mode)}
        alice = _texts(ws, "Project Falcon Zyxcorp acquisition codename PURPLE-OTTER-77", "alice", mode)
        assert {p for p, t in alice if "PURPLE-OTTER-77" in t} == {"secret/merger.md"}


def test_a_file_replaced_by_a_link_is_removed_from_the_index(make_ws, tmp_path):
    _share(tmp_path / "docs")
    note = write(tmp_path / "docs" / "public" / "note.md", "# Note\n\nThe canteen opens at eight.\n")
    ws = make_ws()
    ws.sync()
    assert "public/note.md" in {p for p, _ in _texts(ws, "canteen opens eight", "bob")}
    note.unlink()
    note.symlink_to("../secret/merger.md")
    [report] = ws.sync()
    assert {"file": "public/note.md", "reason": "link"} in report.skipped
    assert not any("PURPLE-OTTER-77" in t or p == "public/note.md"
                   for p, t in _texts(ws, "canteen Project Falcon PURPLE-OTTER-77", "bob"))
    assert "public/handbook.md" in {p for p, _ in _texts(ws, "office hours handbook", "bob")}


def test_a_file_swapped_for_a_link_between_listing_and_reading_is_refused(tmp_path):
    from bastion.connectors.filesystem import FilesystemConnector

    root = tmp_path / "share"
    _share(root)
    write(root / "public" / "swap.md", "# Swap\n\nharmless text\n")
    write(root / "public" / "inner" / "x.md", "# Inner\n\ninner text\n")
    conn = FilesystemConnector(root, default_acl=frozenset({"everyone"}))
    items = {i.key: i for i in conn.scan() if not i.skipped}
    # after the listing: a file becomes a link to the secret, a folder becomes a link to the secret folder
    os.unlink(root / "public" / "swap.md")
    (root / "public" / "swap.md").symlink_to("../secret/merger.md")
    os.rename(root / "public" / "inner", root / "inner-moved")
    (root / "public" / "inner").symlink_to("../secret", target_is_directory=True)
    write(root / "secret" / "x.md", f"# Secret x\n\n{MERGER}\n")
    for key in ("public/swap.md", "public/inner/x.md"):
        try:
            data = items[key].load()
        except OSError as exc:
            assert "refused" in str(exc) or "link" in str(exc)
        else:
            raise AssertionError(f"{key} was read through a link: {data[:40]!r}")
    assert items["public/handbook.md"].load().startswith(b"# Handbook")  # positive control
    assert b"PURPLE-OTTER-77" in items["secret/merger.md"].load()


def test_a_file_replaced_by_another_between_listing_and_reading_is_refused(tmp_path):
    from bastion.connectors.filesystem import FilesystemConnector

    root = tmp_path / "share"
    write(root / "public" / "a.md", "# A\n\nfirst\n")
    conn = FilesystemConnector(root, default_acl=frozenset({"everyone"}))
    [item] = list(conn.scan())
    os.rename(root / "public" / "a.md", root / "old.md")  # keep the inode alive, so a new one differs
    write(root / "public" / "a.md", "# A\n\nsecond\n")
    try:
        item.load()
    except OSError as exc:
        assert "replaced" in str(exc)
    else:
        raise AssertionError("a file replaced since the listing was read under the listing's ACL")
    again = {i.key: i for i in conn.scan()}["public/a.md"]
    assert again.load().endswith(b"second\n")  # the next sync reads it


def test_pipes_and_sockets_are_skipped_with_a_reason_and_never_block(make_ws, tmp_path):
    import socket

    docs = tmp_path / "docs"
    write(docs / "ok.md", "# Ok\n\nregular text about pipes\n")
    os.mkfifo(docs / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(docs / "sock.md"))
    try:
        ws = make_ws()
        [report] = ws.sync()
    finally:
        sock.close()
    reasons = {e["file"]: e["reason"] for e in report.skipped}
    assert reasons == {"pipe.md": "named pipe, not a regular file", "sock.md": "socket, not a regular file"}
    assert "ok.md" in {p for p, _ in _texts(ws, "regular text pipes", "bob")}
