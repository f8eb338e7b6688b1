"""Open the catalog database, apply migrations, hand out sessions.

SQLite (WAL) is the embedded default; any SQLAlchemy URL works for the same code.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic import util as alembic_util
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bastion.core.errors import CatalogError

_HERE = Path(__file__).parent


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _known_revision(cfg: Config, revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(cfg).get_revision(revision) is not None
    except alembic_util.CommandError:
        return False


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE / "migrations"))
    return cfg


class Catalog:
    """The relational catalog of one workspace.

    >>> cat = Catalog.open("sqlite:///:memory:")
    >>> cat.schema_revision() == cat.head_revision()
    True
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a writer that finds the database locked sleeps in
        # SQLite's busy handler with a growing backoff, so concurrent writers wait far longer than
        # the write takes. Writers of this process queue on this lock instead, which hands over at
        # once (figures: docs/benchmarks.md, "API under concurrent load").
        self._write_lock = threading.RLock() if engine.dialect.name == "sqlite" else None

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Catalog:
        engine = create_engine(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        catalog = cls(engine)
        if migrate:
            catalog.migrate()
        return catalog

    @classmethod
    def for_workspace(cls, data_dir: Path) -> Catalog:
        return cls.open(f"sqlite:///{data_dir / 'catalog.db'}")

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (idempotent; keeps all data)."""
        cfg = _alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise CatalogError(f"cannot migrate catalog {self.engine.url!r}: {exc}") from exc
        except alembic_util.CommandError as exc:
            current = self.schema_revision()
            if current is not None and not _known_revision(cfg, current):
                raise CatalogError(
                    f"the catalog {self.engine.url.render_as_string(hide_password=True)!r} is at schema revision "
                    f"{current}, written by a newer Bastion than this one (which knows up to {self.head_revision()}): "
                    "upgrade Bastion, or restore the backup taken before the upgrade") from exc
            raise CatalogError(f"cannot migrate catalog: {exc}") from exc

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        ``write=True`` for short transactions that write: on SQLite they queue on a process-wide lock.
        """
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        try:
            with self._sessions() as session:
                try:
                    yield session
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
        finally:
            if lock is not None:
                lock.release()

    def close(self) -> None:
        self.engine.dispose()
