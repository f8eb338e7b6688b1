"""The catalog on both of its databases: the embedded SQLite file, and a real PostgreSQL server.

Each PostgreSQL test gets a database of its own (``bastion_t_<random>``) on the server at
127.0.0.1:5432, created empty and dropped after the test.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bastion.core.config import CONFIG_FILE, DEFAULT_TOML
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"bastion_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def catalog_url(request, tmp_path) -> str:
    """A catalog URL on each backend: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("pg_url")


def open_workspace(home: Path, catalog_url: str | None = None) -> Workspace:
    """A workspace on the fast fake embedder; with ``catalog_url``, its ``bastion.toml`` points the
    catalog there before the workspace is first opened."""
    if catalog_url is not None and not (home / CONFIG_FILE).exists():
        home.mkdir(parents=True)
        (home / CONFIG_FILE).write_text(DEFAULT_TOML + f'\n[catalog]\nurl = "{catalog_url}"\npool_size = 2\n',
                                        encoding="utf-8")
    Workspace.init(home, exist_ok=True)
    return Workspace.open(home, embedder=HashEmbedder())


def fill(ws: Workspace, docs: Path) -> None:
    """Users alice (finance, staff) and bob (staff); a public folder and one only finance may read; synced."""
    ws.directory.add_user("alice", groups=["finance", "staff"], role="editor")
    ws.directory.add_user("bob", groups=["staff"])
    (docs / "public").mkdir(parents=True)
    (docs / "finance").mkdir()
    (docs / "public" / "travel.md").write_text("# Travel\n\nThe hotel cap is 180 euro per night.\n", encoding="utf-8")
    (docs / "public" / "leave.md").write_text("# Leave\n\nAnnual leave is 28 working days.\n", encoding="utf-8")
    (docs / "finance" / "payroll.md").write_text("# Payroll\n\nThe quartermaster salary band is confidential.\n",
                                                 encoding="utf-8")
    ws.sources.add_folder("public", docs / "public", acl="everyone")
    ws.sources.add_folder("finance", docs / "finance", acl="group:finance")
    reports = ws.sync()
    assert [r.status for r in reports] == ["completed", "completed"]


def seen(ws: Workspace, query: str, user: str) -> list[str]:
    return sorted({h.path for h in ws.search(query, ws.principal(user), 10)})
