"""Copy a workspace's SQLite catalog into an empty PostgreSQL database, and check the copy.

The source file is opened read-only. Every table is copied in foreign-key order, in batches, in one
transaction on the target; before it commits, the row counts of every table and a sample of rows
(the first by primary key) are compared with the source. A difference rolls everything back, so
the target is either a checked copy or stays as it was.

>>> from bastion.catalog.db import Catalog
>>> target = Catalog.open("sqlite:///:memory:")
>>> copy_catalog("/nonexistent/catalog.db", target)
Traceback (most recent call last):
...
bastion.core.errors.CatalogError: no catalog file at /nonexistent/catalog.db
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Integer, Table, create_engine, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from bastion.catalog.db import Catalog, where
from bastion.catalog.models import Base
from bastion.core.errors import CatalogError

BATCH_ROWS = 1000
SAMPLE_ROWS = 100


@dataclass(frozen=True)
class TableCopy:
    """One table's copy: rows in the source and in the target, rows compared and how many differed."""

    table: str
    source_rows: int
    target_rows: int
    sampled: int
    mismatched: int

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def copy_catalog(source_file: str | Path, target: Catalog, *, force: bool = False, batch_rows: int = BATCH_ROWS,
                 sample_rows: int = SAMPLE_ROWS) -> list[TableCopy]:
    """Copy the SQLite catalog ``source_file`` into ``target`` (a PostgreSQL catalog at the current
    schema revision) and return the per-table check; raises :class:`CatalogError` when the target
    holds rows (unless ``force``: they are replaced), the source is at another schema revision, or
    the copy differs from the source (then nothing is written)."""
    path = Path(source_file)
    if not path.is_file():
        raise CatalogError(f"no catalog file at {path}")
    if target.engine.dialect.name != "postgresql":
        raise CatalogError(f"the target must be a PostgreSQL database, not {where(target.engine.url)}")
    # read-only: the copy never changes the source (no migration, no journal-mode change)
    source = create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    try:
        with source.connect() as src:
            _check_source(src, target, path)
            tables = _tables(src)
            try:
                with target.engine.begin() as dst:
                    _make_room(dst, tables, force)
                    for table in tables:
                        _copy_table(src, dst, table, batch_rows)
                    _reset_sequences(dst, tables)
                    report = [_check_table(src, dst, table, sample_rows) for table in tables]
                    bad = [r.table for r in report if not r.ok]
                    if bad:  # leaving the block with an error rolls the whole copy back
                        raise _CopyDiffers(report, bad)
            except _CopyDiffers as exc:
                raise CatalogError(f"the copy differs from the source in {', '.join(exc.tables)}: nothing was "
                                   "written to the target") from None
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise CatalogError(f"copying into the {where(target.engine.url)} failed, nothing was written: "
                                   f"{reason}") from None
    finally:
        source.dispose()
    return report


class _CopyDiffers(Exception):
    def __init__(self, report: list[TableCopy], tables: list[str]):
        super().__init__(tables)
        self.report, self.tables = report, tables


def _check_source(src: Connection, target: Catalog, path: Path) -> None:
    names = set(inspect(src).get_table_names())
    if "alembic_version" not in names:
        raise CatalogError(f"{path} is not a Bastion catalog (it has no alembic_version table)")
    revision = src.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if revision != target.head_revision():
        raise CatalogError(f"the catalog {path} is at schema revision {revision}, this Bastion's is "
                           f"{target.head_revision()}: open the workspace once with this Bastion (e.g. "
                           "`bastion user list`), which upgrades it, then copy it")
    unknown = names - set(Base.metadata.tables) - {"alembic_version", "sqlite_sequence"}
    if unknown:
        raise CatalogError(f"the catalog {path} has tables this Bastion does not know: {', '.join(sorted(unknown))}")


def _tables(src: Connection) -> list[Table]:
    """The catalog's tables in foreign-key order (parents first) that the source holds."""
    present = set(inspect(src).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _make_room(dst: Connection, tables: list[Table], force: bool) -> None:
    filled = [t.name for t in tables if _count(dst, t)]
    if not filled:
        return
    if not force:
        raise CatalogError(f"the target database already holds catalog rows (in {', '.join(filled)}); "
                           "copy into an empty database, or pass --force to replace them")
    # TRUNCATE, not DELETE: the audit log and answer lineage refuse row deletes
    names = ", ".join(dst.dialect.identifier_preparer.quote(t.name) for t in tables)
    dst.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


def _copy_table(src: Connection, dst: Connection, table: Table, batch_rows: int) -> None:
    order = list(table.primary_key.columns) or list(table.columns)
    result = src.execution_options(yield_per=batch_rows).execute(select(table).order_by(*order))
    for rows in result.partitions():
        dst.execute(table.insert(), [dict(r._mapping) for r in rows])


def _reset_sequences(dst: Connection, tables: list[Table]) -> None:
    """Integer ids the target numbers itself continue after the highest copied one."""
    for table in tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, Integer):
            continue
        seq = dst.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": pk[0].name}).scalar()
        if seq:
            top = dst.execute(select(func.max(pk[0]))).scalar()
            dst.execute(text("SELECT setval(CAST(:seq AS regclass), :value, :called)"),
                        {"seq": seq, "value": top or 1, "called": top is not None})


def _check_table(src: Connection, dst: Connection, table: Table, sample_rows: int) -> TableCopy:
    order = list(table.primary_key.columns) or list(table.columns)
    sample = select(table).order_by(*order).limit(sample_rows)
    want = [dict(r._mapping) for r in src.execute(sample)]
    got = [dict(r._mapping) for r in dst.execute(sample)]
    mismatched = sum(1 for a, b in zip(want, got) if a != b) + abs(len(want) - len(got))
    return TableCopy(table.name, _count(src, table), _count(dst, table), len(want), mismatched)


__all__ = ["BATCH_ROWS", "SAMPLE_ROWS", "TableCopy", "copy_catalog"]
