"""Bastion: put company documents and databases behind a local LLM, safely.

A workspace holds the sources, the users and groups, and the index; every search and answer is
made as a :class:`Principal` and sees only what that user may read.

>>> import tempfile
>>> from pathlib import Path
>>> import bastion
>>> from bastion.testing import HashEmbedder  # a fake embedder: no model to download
>>> home, folder = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
>>> _ = (folder / "leave.md").write_text("Annual leave is 28 working days.", encoding="utf-8")
>>> bastion.Workspace.init(home).close()
>>> ws = bastion.Workspace.open(home, embedder=HashEmbedder())
>>> alice = ws.directory.add_user("alice", groups=["hr"])
>>> _ = ws.sources.add_folder("handbook", folder, acl="group:hr")
>>> [report.status for report in ws.sync()]
['completed']
>>> [hit.path for hit in ws.search("annual leave", alice)]
['leave.md']
>>> ws.search("annual leave", ws.directory.add_user("bob"))  # bob is not in hr
[]
>>> ws.close()
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.errors import (
    AccessError,
    AuthError,
    BastionError,
    CatalogError,
    ConfigError,
    EmbedderMismatch,
    EmbeddingError,
    GenerationError,
    IngestError,
    LLMUnavailable,
    MissingExtraError,
    ModelError,
    ParseError,
    StoreError,
    SyncInterrupted,
    WorkspaceError,
)
from bastion.core.types import Hit, Principal

if TYPE_CHECKING:
    from bastion.generation.results import Answer, Citation
    from bastion.ingest.control import SyncControl
    from bastion.ingest.report import SyncReport
    from bastion.workspace import Workspace

__all__ = [
    "AccessError",
    "Answer",
    "AuthError",
    "BastionError",
    "CatalogError",
    "Citation",
    "ConfigError",
    "EmbedderMismatch",
    "EmbeddingError",
    "GenerationError",
    "Hit",
    "IngestError",
    "LLMUnavailable",
    "MissingExtraError",
    "ModelError",
    "ParseError",
    "Principal",
    "StoreError",
    "SyncControl",
    "SyncInterrupted",
    "SyncReport",
    "Workspace",
    "WorkspaceError",
]
__version__ = "0.1.0"

# imported on first use: importing bastion must stay cheap
_LAZY = {
    "Workspace": "bastion.workspace",
    "Answer": "bastion.generation.results",
    "Citation": "bastion.generation.results",
    "SyncReport": "bastion.ingest.report",
    "SyncControl": "bastion.ingest.control",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
