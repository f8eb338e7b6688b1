"""The folder connector keeps the connector contract (bastion.testing.ConnectorContract)."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from bastion.testing import ConnectorContract


class TestFolderContract(ConnectorContract):
    per_document_acl = True  # a `.bastion-acl` file gives its folder's documents their own ACL

    @pytest.fixture
    def backend(self, tmp_path):
        root = tmp_path / "docs"
        root.mkdir()
        return root

    def add_source(self, ws, name, backend, acl):
        ws.sources.add_folder(name, backend, acl=acl)

    def put_document(self, backend, name, text, *, acl=None):
        folder = backend / "restricted" if acl else backend
        folder.mkdir(exist_ok=True)
        if acl:
            (folder / ".bastion-acl").write_text(acl + "\n", encoding="utf-8")
        path = folder / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        stamp = time.time() + 10  # a new mtime even within the file system's time resolution
        os.utime(path, (stamp, stamp))

    def delete_document(self, backend, name):
        (backend / f"{name}.md").unlink()

    def break_document(self, backend, name):
        (backend / f"{name}.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF body at all\n")

    def make_unreachable(self, backend):
        shutil.rmtree(backend)
