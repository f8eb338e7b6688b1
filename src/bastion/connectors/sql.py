"""Rows of a table or query in any SQLAlchemy database, one document per row.

Text comes from a template over the row's columns (``"{title}\\n{body}"``); the ACL comes
from a column of comma-separated principals (text; a NULL or non-text value withdraws that
row with a reported error) or, when absent, the source default. An ``updated_at`` column
lets a sync skip rows that did not change. Ids must be unique: a second row with an id
already seen is reported and not indexed, so one id is one live document.
"""
from __future__ import annotations

import string
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from bastion.connectors.protocol import SourceItem
from bastion.core.errors import AccessError, ConfigError, IngestError
from bastion.core.types import parse_acl


def _is_identifier(name: str) -> bool:
    return all(part.replace("_", "").isalnum() for part in name.split(".")) and bool(name)


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "<unparseable URL>"


def _never() -> bytes:
    raise OSError("a skipped row is never read")


def _timestamp(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:  # not a timestamp we can read: compare the row's content instead
        return None


class SqlConnector:
    """List rows of ``table`` (or the rows a ``query`` returns) as documents."""

    def __init__(self, url: str, *, id_column: str, template: str, default_acl: frozenset[str],
                 table: str | None = None, query: str | None = None, updated_at_column: str | None = None,
                 acl_column: str | None = None, title_column: str | None = None, max_rows: int = 1_000_000):
        if bool(table) == bool(query):
            raise ConfigError("a SQL source needs exactly one of --table or --query")
        if table and not _is_identifier(table):
            raise ConfigError(f"table name {table!r} is not a plain identifier")
        self.url, self.table, self.query = url, table, query
        self.id_column, self.template = id_column, template
        self.updated_at_column, self.acl_column, self.title_column = updated_at_column, acl_column, title_column
        self.default_acl, self.max_rows = default_acl, max_rows
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if not fields:
            raise ConfigError(f"text template {template!r} names no column; use e.g. '{{title}}\\n{{body}}'")
        self.fields = fields
        self.observed_schema: dict[str, list[str]] = {}  # what the last scan saw: object -> "column TYPE"

    def _sql(self) -> str:
        return self.query if self.query else f"SELECT * FROM {self.table}"

    def scan(self) -> Iterator[SourceItem]:
        try:
            engine = create_engine(self.url)
        except SQLAlchemyError as exc:
            raise IngestError(f"invalid SQL source URL {_redact(self.url)!r}: {exc}") from exc
        except ImportError as exc:  # e.g. mysql:// picks MySQLdb, which may not be installed
            raise IngestError(
                f"SQL source URL {_redact(self.url)!r} needs the database driver {exc.name or exc}, which is not "
                "installed; install it, or name an installed driver in the URL "
                "(e.g. 'postgresql+psycopg://', 'mysql+pymysql://')") from exc
        try:
            # closing the result frees the cursor even while a raised error's traceback holds this
            # frame (an open SQLite statement would keep the source database locked)
            with engine.connect() as conn, conn.execute(text(self._sql())) as result:
                columns = list(result.keys())
                self.observed_schema = {self.table or "query": self._describe(conn, columns)}
                missing = ({self.id_column} | self.fields | {c for c in (self.updated_at_column, self.acl_column, self.title_column) if c}) - set(columns)
                if missing:
                    raise IngestError(f"SQL source has no column(s) {sorted(missing)}; it has {columns}")
                rows = result.mappings().fetchmany(self.max_rows + 1)
        except SQLAlchemyError as exc:
            raise IngestError(f"cannot read SQL source {_redact(self.url)!r}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            engine.dispose()
        if len(rows) > self.max_rows:
            raise IngestError(f"SQL source returned more than {self.max_rows} rows (ingest.max_rows_per_table)")
        where = self.table or "query"
        first: dict[str, int] = {}
        for n, row in enumerate(rows, 1):
            key = str(row[self.id_column])
            if key in first:  # one document per id: a second row would keep two versions live
                yield SourceItem(key=key, uri=f"{where}#{key}", media_type="txt", acl=frozenset(), load=_never,
                                 skipped=f"duplicate id: row {n} has the id {key!r} of row {first[key]}, "
                                         "which alone is indexed; give each row its own id")
                continue
            first[key] = n
            yield self._item(dict(row), where)

    def _describe(self, conn, columns: list[str]) -> list[str]:
        """The result's columns with their declared types (a table's, from the database catalog)."""
        types: dict[str, str] = {}
        if self.table:
            from sqlalchemy import inspect

            schema, _, name = self.table.rpartition(".")
            try:
                types = {c["name"]: str(c["type"]) for c in inspect(conn).get_columns(name, schema=schema or None)}
            except (SQLAlchemyError, NotImplementedError):
                types = {}
        return [f"{c} {types[c]}" if c in types else c for c in columns]

    def _item(self, row: dict, where: str) -> SourceItem:
        key = str(row[self.id_column])
        error = None
        acl = self.default_acl
        if self.acl_column:
            value = row.get(self.acl_column)
            try:
                if value is None:
                    raise AccessError("it is NULL")
                acl = parse_acl(value)
            except AccessError as exc:  # this row only: withdrawn (nobody may read it), reported
                acl, error = frozenset(), f"ACL column {self.acl_column!r}: {exc}; the row is withdrawn"
        body = self.template.format(**{f: "" if row[f] is None else row[f] for f in self.fields})
        data = body.encode("utf-8")
        title = str(row[self.title_column]) if self.title_column and row.get(self.title_column) else f"{where} #{key}"
        return SourceItem(
            key=key, uri=f"{where}#{key}", media_type="txt", acl=acl, load=lambda: data,
            mtime=_timestamp(row.get(self.updated_at_column)) if self.updated_at_column else None,
            size=len(data), title=title, error=error,
        )
