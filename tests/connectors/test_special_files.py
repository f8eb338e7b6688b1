"""A named pipe, a socket, a device file, or a link to one of them, in a synced folder is skipped with
a reason and listed like other skipped files; it never hangs a sync (nothing here opens it for reading,
which would block on a pipe until a writer comes). Each sync runs as a real ``bastion sync`` process
under a timeout."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from bastion.connectors.filesystem import FilesystemConnector
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

CHILD = """
import sys
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

home = sys.argv[1]
cli._ws = lambda: Workspace.open(home, embedder=HashEmbedder())
sys.argv = ["bastion", "sync"]
cli.main()
"""


def _special_files(docs) -> list[socket.socket]:
    write(docs / "ok.md", "# Ok\n\nRegular text about the canteen.\n")
    os.mkfifo(docs / "pipe.txt")
    (docs / "sub").mkdir()
    os.mkfifo(docs / "sub" / "pipe.md")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(docs / "sock.md"))
    (docs / "to_pipe.md").symlink_to("pipe.txt")
    return [sock]


def test_a_sync_skips_pipes_sockets_devices_and_links_to_them_and_never_hangs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    held = _special_files(docs)
    expected = {"pipe.txt": "named pipe, not a regular file", "sub/pipe.md": "named pipe, not a regular file",
                "sock.md": "socket, not a regular file", "to_pipe.md": "link"}
    try:
        os.mknod(docs / "null.txt", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        expected["null.txt"] = "device file, not a regular file"
    except PermissionError:
        pass  # not allowed to make device files here: the other kinds still run
    home = tmp_path / "ws"
    Workspace.init(home)
    Workspace.open(home, embedder=HashEmbedder()).sources.add_folder("share", docs, acl="everyone")
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(home)], capture_output=True, text=True, timeout=120,
                              env=os.environ | {"COLUMNS": "200"})
    finally:
        for s in held:
            s.close()
    assert done.returncode == 0, done.stdout + done.stderr  # skipped by design: not a failure
    assert "1 added" in done.stdout and "0 failed" in done.stdout
    for name, reason in expected.items():
        assert f"skipped {name}: {reason}" in done.stdout
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("bob")
    assert {h.path for h in ws.search("canteen", ws.principal("bob"), mode="bm25")} == {"ok.md"}


def test_a_pipe_swapped_in_after_the_listing_is_refused_without_blocking(tmp_path):
    root = tmp_path / "share"
    write(root / "a.md", "# A\n\ntext\n")
    [item] = list(FilesystemConnector(root, default_acl=frozenset({"everyone"})).scan())
    (root / "a.md").unlink()
    os.mkfifo(root / "a.md")
    outcome: list[BaseException | bytes] = []

    def load() -> None:
        try:
            outcome.append(item.load())
        except OSError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a pipe blocked"
    [result] = outcome
    assert isinstance(result, OSError) and "named pipe, not a regular file: refused" in str(result)


@pytest.mark.parametrize("name", ["pipe", "socket"])
def test_an_acl_file_that_is_a_pipe_or_a_socket_withdraws_its_folder_without_blocking(tmp_path, name):
    root = tmp_path / "share"
    write(root / "team" / "plan.md", "# Plan\n\nsecret plan\n")
    held = None
    if name == "pipe":
        os.mkfifo(root / "team" / ".bastion-acl")
    else:
        held = socket.socket(socket.AF_UNIX)
        held.bind(str(root / "team" / ".bastion-acl"))
    try:
        [item] = list(FilesystemConnector(root, default_acl=frozenset({"everyone"})).scan())
    finally:
        if held is not None:
            held.close()
    assert item.acl == frozenset() and item.error and "withdrawn" in item.error
