"""Open the catalog database, apply migrations, hand out sessions.

SQLite (WAL) is the embedded default; PostgreSQL (``[catalog] url``, docs/postgres.md) runs the same code.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic import util as alembic_util
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bastion.core.errors import CatalogError

if TYPE_CHECKING:
    from bastion.core.config import CatalogConfig

_HERE = Path(__file__).parent


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _no_nul(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) and "\x00" in value else value


def _row_without_nul(row: Any) -> Any:
    if isinstance(row, dict):
        return {k: _no_nul(v) for k, v in row.items()}
    if isinstance(row, (list, tuple)):
        return type(row)(_no_nul(v) for v in row)
    return row


def _pg_text_params(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                    executemany: bool) -> tuple[str, Any]:
    """PostgreSQL text cannot hold NUL characters (SQLite's can): a NUL in a value written or looked
    up (a question, a title, a name in a request) becomes U+FFFD instead of failing the request."""
    if executemany and isinstance(parameters, (list, tuple)):
        return statement, [_row_without_nul(row) for row in parameters]
    return statement, _row_without_nul(parameters)


def where(url: URL) -> str:
    """A catalog URL as people name it, without the password: ``database 'x' at host:port`` or the file."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    return f"{url.get_backend_name()} database {url.database!r} at {url.host or 'localhost'}:{url.port or 5432}"


def _reason(exc: BaseException) -> str:
    """The driver's own first line of an error (without SQLAlchemy's statement and help link)."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


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
    def open(cls, url: str | URL, *, migrate: bool = True, **engine_options: Any) -> Catalog:
        """Open (and by default migrate) the catalog at ``url``; ``engine_options`` go to SQLAlchemy's
        ``create_engine`` (pool settings, ``connect_args``)."""
        try:
            engine = create_engine(url, **engine_options)
        except ArgumentError as exc:
            raise CatalogError(f"cannot open the catalog: {_reason(exc)}") from None
        except ImportError as exc:  # the database's driver is not installed
            raise CatalogError(f"cannot open the catalog: {exc}; for PostgreSQL install the postgres extra: "
                               "pip install 'bastion[postgres]'") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "before_cursor_execute", _pg_text_params, retval=True)
        catalog = cls(engine)
        if engine.dialect.name != "sqlite":
            catalog.check_connection()
        if migrate:
            catalog.migrate()
        return catalog

    @classmethod
    def for_workspace(cls, data_dir: Path, config: CatalogConfig | None = None) -> Catalog:
        """The workspace's catalog: ``[catalog] url`` when set, else the SQLite file in ``data_dir``."""
        if config is None or config.url is None:
            return cls.open(f"sqlite:///{data_dir / 'catalog.db'}")
        url = make_url(config.url)
        if config.password_env:
            password = os.environ.get(config.password_env)
            if not password:
                raise CatalogError(f"catalog.password_env names {config.password_env}, which is not set: export "
                                   f"the password of the {where(url)} in it")
            url = url.set(password=password)
        if url.get_backend_name() == "sqlite":
            return cls.open(url)
        options: dict[str, Any] = {
            "pool_size": config.pool_size, "max_overflow": config.max_overflow, "pool_timeout": config.pool_timeout_s,
            "pool_recycle": config.pool_recycle_s, "pool_pre_ping": True,
        }
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": config.connect_timeout_s}
        return cls.open(url, **options)

    def check_connection(self) -> None:
        """Connect once; an unreachable server or a refused login is a :class:`CatalogError` naming it."""
        try:
            with self.engine.connect():
                pass
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise CatalogError(f"cannot connect to the catalog, the {where(self.engine.url)} "
                               f"(user {self.engine.url.username!r}): {_reason(exc)}") from None

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (idempotent; keeps all data)."""
        cfg = _alembic_config()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise CatalogError(f"cannot migrate the catalog, the {where(self.engine.url)}: {_reason(exc)}") from exc
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
