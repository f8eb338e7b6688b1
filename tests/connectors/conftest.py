"""Workspaces the connector tests share: alice (finance, staff) and bob (staff) on the hash embedder."""
import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace


@pytest.fixture
def ws(tmp_path):
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def options_ws(tmp_path_factory):
    """One workspace for the tests that only check what is refused (nothing is ever stored in it)."""
    home = tmp_path_factory.mktemp("options") / "ws"
    Workspace.init(home)
    ws = Workspace.open(home, embedder=HashEmbedder())
    yield ws
    ws.close()
