"""Shared fixtures: workspaces on the fast fake embedder, and the real example corpus."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "corpus"
DATASETS = ROOT.parent / "shared" / "datasets"

warnings.filterwarnings("ignore", category=DeprecationWarning, module="lancedb")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_ws(tmp_path):
    """A workspace with the hash embedder, users alice (finance) and bob (staff), one folder source."""

    def factory(docs: Path | None = None, acl: str = "everyone", **source_opts) -> Workspace:
        home = tmp_path / "ws"
        Workspace.init(home)
        ws = Workspace.open(home, embedder=HashEmbedder())
        ws.directory.add_user("alice", groups=["finance", "staff"])
        ws.directory.add_user("bob", groups=["staff"])
        ws.sources.add_folder("docs", docs or tmp_path / "docs", acl=acl, **source_opts)
        return ws

    (tmp_path / "docs").mkdir()
    return factory


def paths_seen(ws: Workspace, query: str, user: str, k: int = 10) -> set[str]:
    return {h.path for h in ws.search(query, ws.principal(user), k)}
