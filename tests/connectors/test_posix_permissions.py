"""Folder sources that take their ACLs from the file system: real users and groups made with
``useradd``/``groupadd`` (removed afterwards), real modes and real ``setfacl`` ACLs, read back
through a real sync and a search as each user. Every denial is paired with someone who still
finds the document."""
from __future__ import annotations

import os
import pwd
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from bastion.connectors.filesystem import FilesystemConnector
from bastion.connectors.posix import PosixAclError, decode_acl
from bastion.core.errors import ConfigError
from bastion.source_admin import edit_source
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import paths_seen, write

TAG = f"bstt_{os.getpid() % 100000}"
ALICE, BOB, CAROL = f"{TAG}_alice", f"{TAG}_bob", f"{TAG}_carol"
FIN, STAFF, MISC = f"{TAG}_fin", f"{TAG}_staff", f"{TAG}_misc"
UNKNOWN_UID = 3_999_917  # no passwd entry


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def accounts():
    """alice (groups fin, staff), bob (staff), carol (none): all with primary group misc."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setfacl") is None:
        pytest.fail("these tests run as root with useradd and setfacl (Debian packages passwd and acl)")
    for group in (FIN, STAFF, MISC):
        _run("groupadd", group)
    try:
        for user, extra in ((ALICE, f"{FIN},{STAFF}"), (BOB, STAFF), (CAROL, "")):
            _run("useradd", "--no-create-home", "--no-user-group", "--gid", MISC, "--shell", "/usr/sbin/nologin",
                 *(["--groups", extra] if extra else []), user)
        yield
    finally:
        for user in (ALICE, BOB, CAROL):
            subprocess.run(["userdel", user], capture_output=True)
        for group in (FIN, STAFF, MISC):
            subprocess.run(["groupdel", group], capture_output=True)


def _file(path: Path, text: str, mode: int, user: str | int, group: str, *acl: str) -> Path:
    write(path, text)
    uid = user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
    shutil.chown(path, group=group)
    os.chown(path, uid, -1)
    path.chmod(mode)
    for spec in acl:
        _run("setfacl", "-m", spec, str(path))
    return path


def _folder(path: Path, mode: int, user: str, group: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user=user, group=group)
    path.chmod(mode)
    return path


def _share(root: Path) -> Path:
    """One file per case; each holds the word 'ledger' and its own name."""
    root.mkdir(0o755)
    _file(root / "owner_only.md", "# owner only\n\nledger owner only\n", 0o600, ALICE, MISC)
    _file(root / "group_read.md", "# group read\n\nledger group read\n", 0o640, BOB, FIN)
    _file(root / "named_user.md", "# named user\n\nledger named user\n", 0o600, ALICE, MISC, f"u:{CAROL}:r")
    _file(root / "named_group.md", "# named group\n\nledger named group\n", 0o600, ALICE, MISC, f"g:{STAFF}:r")
    _file(root / "masked.md", "# masked\n\nledger masked\n", 0o600, ALICE, MISC, f"g:{STAFF}:r", "m::---")
    _file(root / "except_bob.md", "# except bob\n\nledger except bob\n", 0o640, CAROL, STAFF, f"u:{BOB}:---")
    _file(root / "public.md", "# public\n\nledger public\n", 0o644, CAROL, FIN)
    _file(root / "root_only.md", "# root only\n\nledger root only\n", 0o600, 0, "root")
    _file(root / "unmapped.md", "# unmapped\n\nledger unmapped\n", 0o640, UNKNOWN_UID, FIN)
    locked = _folder(root / "locked", 0o710, ALICE, FIN)  # only alice and group fin may pass
    _file(locked / "inside.md", "# inside\n\nledger inside\n", 0o640, BOB, STAFF)
    return root


def _labels(conn: FilesystemConnector) -> dict[str, frozenset[str]]:
    return {i.key: i.acl for i in conn.scan() if not i.skipped}


def _ws(tmp_path: Path, docs: Path, **options) -> Workspace:
    home = tmp_path / "ws"
    Workspace.init(home)
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user(ALICE, groups=[FIN, STAFF, MISC])
    ws.directory.add_user(BOB, groups=[STAFF, MISC])
    ws.directory.add_user(CAROL, groups=[MISC])
    ws.sources.add_folder("share", docs, acl="everyone", **options)
    return ws


def _seen(ws: Workspace) -> dict[str, set[str]]:
    return {who: {p.removesuffix(".md") for p in paths_seen(ws, "ledger", who, k=20)} for who in (ALICE, BOB, CAROL)}


def test_each_file_is_labelled_with_who_the_file_system_lets_read_it(accounts, tmp_path):
    conn = FilesystemConnector(_share(tmp_path / "docs"), default_acl=frozenset({"everyone"}), permissions="posix")
    labels = _labels(conn)
    assert labels["owner_only.md"] == {f"user:{ALICE}"}
    assert labels["group_read.md"] == {f"user:{BOB}", f"group:{FIN}"}
    assert labels["named_user.md"] == {f"user:{ALICE}", f"user:{CAROL}"}
    assert labels["named_group.md"] == {f"user:{ALICE}", f"group:{STAFF}"}
    assert labels["masked.md"] == {f"user:{ALICE}"}  # the mask takes staff's read away
    # bob is denied by name: staff becomes its listed members but bob (labels cannot say "except")
    assert labels["except_bob.md"] == {f"user:{CAROL}", f"user:{ALICE}"}
    assert labels["public.md"] == {f"user:{CAROL}", f"group:{FIN}"}  # "other" grants nobody by default
    assert labels["root_only.md"] == frozenset()  # the superuser is not a principal
    assert labels["unmapped.md"] == {f"group:{FIN}"}
    assert conn.unmapped == {"unmapped.md": [f"uid {UNKNOWN_UID}"]}
    # bob owns inside.md but cannot pass locked/; alice (staff, and allowed through) can
    assert labels["locked/inside.md"] == {f"user:{ALICE}"}


def test_a_sync_and_search_show_each_user_exactly_what_the_file_system_allows(accounts, tmp_path):
    ws = _ws(tmp_path, _share(tmp_path / "docs"), permissions="posix")
    [report] = ws.sync()
    assert report.documents_added == 10 and report.documents_failed == 0
    seen = _seen(ws)
    assert seen[ALICE] == {"owner_only", "group_read", "named_user", "named_group", "masked", "except_bob",
                           "public", "unmapped", "locked/inside"}
    assert seen[BOB] == {"group_read", "named_group"}  # not except_bob (denied by name), not locked/inside
    assert seen[CAROL] == {"named_user", "except_bob", "public"}
    assert not any("root_only" in s for s in seen.values())


def test_chmod_and_setfacl_change_who_finds_a_document_at_the_next_sync_without_new_content(accounts, tmp_path):
    docs = _share(tmp_path / "docs")
    ws = _ws(tmp_path, docs, permissions="posix")
    ws.sync()
    before = _seen(ws)
    assert "group_read" in before[ALICE] and "group_read" in before[BOB] and "group_read" not in before[CAROL]
    assert "public" not in before[BOB] and "public" in before[CAROL]
    (docs / "group_read.md").chmod(0o600)  # group fin loses read: alice no longer, bob (owner) still
    _run("setfacl", "-m", f"u:{CAROL}:r", str(docs / "group_read.md"))
    [report] = ws.sync()
    assert report.documents_acl_changed == 1 and report.documents_updated == 0 and report.documents_added == 0
    assert report.chunks_embedded == 0 and report.chunks_written == 1  # re-labelled, not embedded again
    after = _seen(ws)
    assert "group_read" not in after[ALICE] and "group_read" in after[BOB] and "group_read" in after[CAROL]
    edit_source(ws.sources, "share", {"posix_other": "everyone"})  # the admin lets "other" mean everyone
    ws.sync()
    assert "public" in _seen(ws)[BOB] and "owner_only" not in _seen(ws)[BOB]


def test_other_read_bits_grant_the_configured_principal_and_never_past_a_denial(accounts, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir(0o755)
    _file(docs / "open.md", "open\n", 0o644, ALICE, FIN)
    _file(docs / "open_but_staff_denied.md", "x\n", 0o644, ALICE, FIN, f"g:{STAFF}:---")
    conn = FilesystemConnector(docs, default_acl=frozenset(), permissions="posix", posix_other="everyone")
    labels = _labels(conn)
    assert labels["open.md"] == {"everyone"}
    # "everyone but staff" cannot be written as labels: the other bit is left out, never widened
    assert labels["open_but_staff_denied.md"] == {f"user:{ALICE}", f"group:{FIN}"}
    staff_only = FilesystemConnector(docs, default_acl=frozenset(), permissions="posix", posix_other=f"group:{STAFF}")
    assert _labels(staff_only)["open.md"] == {f"user:{ALICE}", f"group:{FIN}", f"group:{STAFF}"}


def test_with_both_a_document_needs_the_file_system_and_the_acl_file_to_agree(accounts, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir(0o755)
    _file(docs / "team.md", "# team\n\nledger team\n", 0o640, BOB, STAFF)  # file system: bob, staff
    _file(docs / "mine.md", "# mine\n\nledger mine\n", 0o600, CAROL, MISC)  # file system: carol
    write(docs / ".bastion-acl", f"group:{FIN}\nuser:{CAROL}\n")  # acl file: fin, carol
    labels = _labels(FilesystemConnector(docs, default_acl=frozenset({"everyone"}), permissions="both"))
    assert labels["team.md"] == {f"user:{ALICE}"}  # in staff (file system) and in fin (acl file)
    assert labels["mine.md"] == {f"user:{CAROL}"}
    assert _labels(FilesystemConnector(docs, default_acl=frozenset({"everyone"}), permissions="posix"))["team.md"] == {
        f"user:{BOB}", f"group:{STAFF}"}  # posix alone ignores the acl file
    ws = _ws(tmp_path, docs, permissions="both")
    ws.sync()
    seen = _seen(ws)
    assert seen[ALICE] == {"team"} and seen[BOB] == set() and seen[CAROL] == {"mine"}


def test_an_acl_file_that_cannot_be_used_still_withdraws_its_folder_with_both(accounts, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir(0o755)
    _file(docs / "a.md", "# a\n\nledger a\n", 0o644, ALICE, FIN)
    write(docs / ".bastion-acl", "not a principal\n")
    [item] = list(FilesystemConnector(docs, default_acl=frozenset({"everyone"}), permissions="both").scan())
    assert item.acl == frozenset() and "invalid .bastion-acl" in (item.error or "")
    [item] = list(FilesystemConnector(docs, default_acl=frozenset({"everyone"}), permissions="posix").scan())
    assert item.acl == {f"user:{ALICE}", f"group:{FIN}"} and item.error is None


def test_a_folder_has_no_acl_of_its_own_so_uploads_are_refused_but_a_file_acl_is_read_now(accounts, tmp_path):
    from pathlib import PurePosixPath

    conn = FilesystemConnector(_share(tmp_path / "docs"), default_acl=frozenset(), permissions="posix")
    assert isinstance(conn.folder_acl(PurePosixPath(".")), str)
    assert conn.file_acl(PurePosixPath("locked/inside.md")) == {f"user:{ALICE}"}
    assert conn.file_acl(PurePosixPath("owner_only.md")) == {f"user:{ALICE}"}
    files = FilesystemConnector(tmp_path / "docs", default_acl=frozenset({"everyone"}))
    assert files.folder_acl(PurePosixPath(".")) == {"everyone"}  # acl-files: unchanged


def test_bad_permission_options_are_refused_with_the_value_named(tmp_path):
    with pytest.raises(ConfigError, match="'unix'"):
        FilesystemConnector(tmp_path, default_acl=frozenset(), permissions="unix")
    with pytest.raises(ConfigError, match="posix_other"):
        FilesystemConnector(tmp_path, default_acl=frozenset(), permissions="posix", posix_other="all staff")
    ws_home = tmp_path / "ws"
    Workspace.init(ws_home)
    ws = Workspace.open(ws_home, embedder=HashEmbedder())
    with pytest.raises(ConfigError, match="'unix'"):
        ws.sources.add_folder("s", tmp_path, permissions="unix")
    assert ws.sources.list() == []


def _raw(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_the_access_acl_attribute_is_decoded_and_anything_malformed_is_refused():
    good = _raw((0x01, 6, 0xFFFFFFFF), (0x02, 4, 1001), (0x04, 4, 0xFFFFFFFF), (0x08, 5, 2002),
                (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))
    assert decode_acl(good) == (((1001, 4),), ((2002, 5),), 4, 4)
    for bad, reason in ((good[:-3], "whole entries"), (_raw((0x01, 6, 0), version=1), "version"),
                        (_raw((0x40, 4, 0)), "unknown tag"), (_raw((0x02, 9, 5)), "permission bits"),
                        (_raw((0x02, 4, 5)), "no mask")):
        with pytest.raises(PosixAclError, match=reason):
            decode_acl(bad)


def test_the_cli_adds_and_edits_a_source_whose_permissions_come_from_the_file_system(accounts, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import bastion.cli.app as cli

    docs = tmp_path / "docs"
    docs.mkdir(0o755)
    _file(docs / "pay.md", "# Pay\n\nledger pay\n", 0o644, BOB, STAFF)
    home = tmp_path / "ws"
    Workspace.init(home)
    ws = Workspace.open(home, embedder=HashEmbedder())
    for user in (ALICE, BOB, CAROL):
        ws.directory.add_user(user)
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))

    def run(*args: str):
        return CliRunner().invoke(cli.app, ["--home", str(home), *args], env={"COLUMNS": "300"})

    bad = run("source", "add", "share", "--path", str(docs), "--permissions", "unix")
    assert bad.exit_code == 2 and "'unix'" in bad.output
    ok = run("source", "add", "share", "--path", str(docs), "--permissions", "posix", "--json")
    assert ok.exit_code == 0, ok.output
    assert run("sync", "share").exit_code == 0
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert paths_seen(ws, "ledger", BOB) == {"pay.md"} and paths_seen(ws, "ledger", CAROL) == set()
    ws.close()
    edited = run("source", "edit", "share", "--posix-other", "everyone", "--json")
    assert edited.exit_code == 0 and json.loads(edited.output)["changed"] == ["posix_other"]
    assert run("sync", "share").exit_code == 0
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert paths_seen(ws, "ledger", CAROL) == {"pay.md"} and paths_seen(ws, "ledger", BOB) == {"pay.md"}
    ws.close()


def test_the_original_of_a_file_is_served_to_whom_the_file_system_lets_read_it_now(accounts, tmp_path):
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from bastion.accounts import Accounts
    from bastion.catalog.models import DocumentRow
    from bastion.server import create_app

    docs = _share(tmp_path / "docs")
    ws = _ws(tmp_path, docs, permissions="posix")
    ws.sync()
    with ws.catalog.session() as s:
        doc_id = s.scalar(select(DocumentRow.id).where(DocumentRow.key == "group_read.md"))
    keys = {u: Accounts(ws.catalog).create_key(u)[1] for u in (ALICE, BOB, CAROL)}
    with TestClient(create_app(ws)) as client:
        def status(user: str) -> int:
            return client.get(f"/api/v1/documents/{doc_id}/original",
                              headers={"Authorization": f"Bearer {keys[user]}"}).status_code

        assert (status(ALICE), status(BOB), status(CAROL)) == (200, 200, 404)  # fin member, owner; carol neither
        os.chmod(docs / "group_read.md", 0o600)  # the file system decides now, before any sync
        assert (status(ALICE), status(BOB)) == (404, 200)
    ws.close()
