"""SQL sources end to end, against the real PostgreSQL and MariaDB servers and a SQLite file.

Every test owns a uniquely named table and drops it afterwards. A server that cannot be
reached fails the test (CI runs both servers); nothing here is mocked.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bastion.core.errors import IngestError
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

pytestmark = pytest.mark.services

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
BACKENDS = ["sqlite", "postgresql", "mariadb"]
# The natural "when was this row last changed" type of each backend: tz-naive in all three,
# second precision in MariaDB.
TS_TYPE = {"sqlite": "TIMESTAMP", "postgresql": "TIMESTAMP", "mariadb": "DATETIME"}
TEXT_TYPE = {"sqlite": "TEXT", "postgresql": "VARCHAR(500)", "mariadb": "VARCHAR(500)"}

T0 = datetime(2024, 3, 1, 9, 30, 0)
T1 = T0 + timedelta(seconds=1)  # one second later: the finest step MariaDB DATETIME keeps

ROWS = [  # id, title, body, acl
    (1, "Travel policy", "The hotel cap is 180 euro per night on business trips.", "everyone"),
    (2, "Payroll bands", "Salary bands for the quartermaster grade are confidential.", "group:finance"),
    (3, "Staff handbook", "Annual leave is 28 working days for every employee.", "group:staff"),
]


@dataclass
class Db:
    """One backend and the table a test owns on it."""

    kind: str
    url: str
    engine: Engine
    table: str

    def run(self, sql: str, **params) -> None:
        if self.kind == "sqlite":  # the sqlite3 driver has no datetime type; store ISO text
            params = {k: v.isoformat(sep=" ") if isinstance(v, datetime) else v for k, v in params.items()}
        with self.engine.begin() as conn:
            conn.execute(text(sql.replace("{t}", self.table)), params)

    def create(self, ts_type: str | None = None) -> None:
        self.run(f"CREATE TABLE {{t}} (id INTEGER PRIMARY KEY, title {TEXT_TYPE[self.kind]}, body TEXT, "
                 f"updated_at {ts_type or TS_TYPE[self.kind]}, acl {TEXT_TYPE[self.kind]})")

    def insert(self, id: int, title: str, body: str, acl: str | None, updated_at=T0) -> None:
        self.run("INSERT INTO {t} (id, title, body, updated_at, acl) VALUES (:id, :title, :body, :ts, :acl)",
                 id=id, title=title, body=body, ts=updated_at, acl=acl)

    def update(self, id: int, **values) -> None:
        sets = ", ".join(f"{col} = :{col}" for col in values)
        self.run(f"UPDATE {{t}} SET {sets} WHERE id = :id", id=id, **values)

    def seed(self, ts_type: str | None = None) -> None:
        self.create(ts_type)
        for row in ROWS:
            self.insert(*row)


def _connect(kind: str, url: str) -> Engine:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        pytest.fail(f"the {kind} server at {url} is not reachable ({exc.__class__.__name__}: {exc}); "
                    "these tests need it running (CI starts it)", pytrace=False)
    return engine


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path) -> Db:
    kind = request.param
    url = {"sqlite": f"sqlite:///{tmp_path / 'source.db'}", "postgresql": PG_URL, "mariadb": MARIADB_URL}[kind]
    engine = _connect(kind, url)
    d = Db(kind, url, engine, f"bastion_t_{uuid.uuid4().hex[:12]}")
    yield d
    try:
        d.run("DROP TABLE IF EXISTS {t}")
    finally:
        engine.dispose()


@pytest.fixture
def ws(tmp_path) -> Workspace:
    Workspace.init(tmp_path / "ws")
    w = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    w.directory.add_user("alice", groups=["finance", "staff"])
    w.directory.add_user("bob", groups=["staff"])
    w.directory.add_user("fiona", groups=["finance"])
    w.directory.add_user("dave")  # in no group at all
    yield w
    w.close()


def add_source(ws: Workspace, db: Db, name: str = "rows", **options):
    opts = dict(table=db.table, id_column="id", template="{title}\n{body}", updated_at_column="updated_at",
                acl_column="acl", title_column="title")
    if "query" in options:
        opts.pop("table")
    opts.update(options)
    return ws.sources.add_sql(name, db.url, **opts)


def sync(ws: Workspace):
    [report] = ws.sync()
    return report


def seen(ws: Workspace, query: str, user: str) -> dict[str, str]:
    """Row id -> text of what ``user`` finds for ``query`` (k large enough to list every row)."""
    out: dict[str, str] = {}
    for h in ws.search(query, ws.principal(user), 50):
        out[h.path] = out.get(h.path, "") + h.text
    return out


def counts(report) -> dict:
    c = report.counts()
    return {k: c[k] for k in ("documents_added", "documents_updated", "documents_acl_changed",
                              "documents_deleted", "documents_unchanged", "documents_failed")}


def expect(**nonzero) -> dict:
    base = dict.fromkeys(("documents_added", "documents_updated", "documents_acl_changed",
                          "documents_deleted", "documents_unchanged", "documents_failed"), 0)
    base.update({f"documents_{k}": v for k, v in nonzero.items()})
    return base


# -- 1. initial sync ------------------------------------------------------------------------
def test_initial_sync_makes_rows_searchable_and_respects_acl_column(db, ws):
    db.seed()
    add_source(ws, db)
    report = sync(ws)
    assert counts(report) == expect(added=3), report.errors
    assert report.errors == []

    hit = ws.search("salary bands quartermaster", ws.principal("fiona"), 1)[0]
    assert (hit.path, hit.document, hit.source) == ("2", "Payroll bands", "rows")
    assert hit.text == "Payroll bands\nSalary bands for the quartermaster grade are confidential."
    # finance sees the finance row; staff-only bob does not, though he does see the others
    assert "2" in seen(ws, "salary bands quartermaster", "fiona")
    assert "2" not in seen(ws, "salary bands quartermaster", "bob")
    assert set(seen(ws, "salary bands quartermaster", "bob")) == {"1", "3"}
    assert set(seen(ws, "annual leave hotel salary", "alice")) == {"1", "2", "3"}
    assert set(seen(ws, "annual leave hotel salary", "fiona")) == {"1", "2"}
    assert set(seen(ws, "annual leave hotel salary", "dave")) == {"1"}  # 'everyone' = any known user


# -- 2. changed row -------------------------------------------------------------------------
def test_changed_row_replaces_old_text(db, ws):
    db.seed()
    add_source(ws, db)
    sync(ws)
    assert "180 euro" in seen(ws, "hotel cap", "bob")["1"]

    db.update(1, body="The hotel cap is 210 euro per night in capital cities.", updated_at=T1)
    report = sync(ws)
    assert counts(report) == expect(updated=1, unchanged=2), report.errors
    assert report.chunks_embedded == 1

    found = seen(ws, "hotel cap euro per night", "bob")
    assert found["1"] == "Travel policy\nThe hotel cap is 210 euro per night in capital cities."
    assert not any("180" in t for t in found.values())
    assert not any("180" in t for t in seen(ws, "hotel cap euro per night", "alice").values())


# -- 3. deleted row -------------------------------------------------------------------------
def test_deleted_row_disappears(db, ws):
    db.seed()
    add_source(ws, db)
    sync(ws)
    assert "2" in seen(ws, "salary bands", "alice")

    db.run("DELETE FROM {t} WHERE id = 2")
    report = sync(ws)
    assert counts(report) == expect(deleted=1, unchanged=2), report.errors
    assert report.chunks_embedded == 0
    assert set(seen(ws, "salary bands quartermaster hotel leave", "alice")) == {"1", "3"}


# -- 4. ACL change --------------------------------------------------------------------------
@pytest.mark.parametrize("bump_updated_at", [False, True], ids=["same-updated_at", "new-updated_at"])
def test_acl_change_is_applied_without_reembedding(db, ws, bump_updated_at):
    db.seed()
    add_source(ws, db)
    sync(ws)
    assert "2" in seen(ws, "salary bands", "fiona")
    assert "2" not in seen(ws, "salary bands", "bob")

    # grant: finance row opened to staff
    db.update(2, acl="group:finance,group:staff", **({"updated_at": T1} if bump_updated_at else {}))
    report = sync(ws)
    assert counts(report) == expect(acl_changed=1, unchanged=2), report.errors
    assert report.chunks_embedded == 0
    assert "2" in seen(ws, "salary bands", "bob")
    assert "2" in seen(ws, "salary bands", "fiona")
    assert "2" not in seen(ws, "salary bands", "dave")

    # revoke: the public row becomes finance-only; bob loses it at once, fiona keeps it
    db.update(1, acl="group:finance", **({"updated_at": T1} if bump_updated_at else {}))
    report = sync(ws)
    assert counts(report) == expect(acl_changed=1, unchanged=2), report.errors
    assert report.chunks_embedded == 0
    assert "1" not in seen(ws, "hotel cap", "bob")
    assert "1" not in seen(ws, "hotel cap", "dave")
    assert "1" in seen(ws, "hotel cap", "fiona")

    # and to everyone
    db.update(2, acl="everyone", **({"updated_at": T1 + timedelta(seconds=1)} if bump_updated_at else {}))
    report = sync(ws)
    assert (report.documents_acl_changed, report.chunks_embedded) == (1, 0)
    assert "2" in seen(ws, "salary bands", "dave")


# -- 5. unchanged re-sync -------------------------------------------------------------------
def test_unchanged_resync_writes_nothing(db, ws):
    db.seed()
    add_source(ws, db)
    first = sync(ws)
    assert first.chunks_embedded == 3
    version, calls = ws.store._table.version, ws.embedder.calls

    again = sync(ws)
    assert counts(again) == expect(unchanged=3), again.errors
    assert again.chunks_embedded == again.chunks_written == 0
    assert ws.store._table.version == version  # the index was not written at all
    assert ws.embedder.calls == calls
    assert set(seen(ws, "hotel leave", "alice")) == {"1", "2", "3"}


# -- 6. invalid ACL value -------------------------------------------------------------------
def test_invalid_acl_value_is_reported_and_row_is_hidden_from_everyone(db, ws):
    db.seed()
    db.insert(4, "Bonus pool", "The bonus pool zeppelin allocation is secret.", "finance team")
    add_source(ws, db)
    report = sync(ws)
    assert counts(report) == expect(added=3, failed=1)
    [error] = report.errors
    assert error["file"] == "4"
    assert "finance team" in error["reason"] and "'acl'" in error["reason"]
    for user in ("alice", "bob", "fiona", "dave"):
        assert "4" not in seen(ws, "bonus pool zeppelin allocation", user)
    # the good rows synced normally (positive controls)
    assert set(seen(ws, "bonus pool zeppelin allocation", "alice")) == {"1", "2", "3"}
    assert set(seen(ws, "bonus pool zeppelin allocation", "bob")) == {"1", "3"}

    # an indexed row whose ACL turns invalid is withdrawn (fail closed), not left as it was
    db.update(2, acl="finance team")
    report = sync(ws)
    assert report.documents_failed == 2
    assert {e["file"] for e in report.errors} == {"2", "4"}
    assert "2" not in seen(ws, "salary bands", "fiona")
    assert "2" not in seen(ws, "salary bands", "alice")

    # fixing the value brings both back for the right people only
    db.update(2, acl="group:finance")
    db.update(4, acl="group:finance")
    report = sync(ws)
    assert (report.documents_failed, report.errors) == (0, [])
    assert {"2", "4"} <= set(seen(ws, "salary bands bonus pool", "fiona"))
    assert not {"2", "4"} & set(seen(ws, "salary bands bonus pool", "bob"))


# -- 7. --query mode ------------------------------------------------------------------------
def test_query_mode_selects_rows_with_where(db, ws):
    db.seed()
    add_source(ws, db, query=f"SELECT id, title, body, updated_at, acl FROM {db.table} WHERE title <> 'Payroll bands'")
    report = sync(ws)
    assert counts(report) == expect(added=2), report.errors
    found = seen(ws, "salary bands hotel leave", "alice")  # alice could read row 2, but the query excludes it
    assert set(found) == {"1", "3"}
    assert found["3"] == "Staff handbook\nAnnual leave is 28 working days for every employee."

    # a row that stops matching the WHERE leaves the index; one that starts matching joins it
    db.update(3, title="Payroll bands", updated_at=T1)
    db.update(2, title="Payroll overview", updated_at=T1)
    report = sync(ws)
    assert counts(report) == expect(added=1, deleted=1, unchanged=1), report.errors
    assert set(seen(ws, "salary bands hotel leave", "alice")) == {"1", "2"}
    assert "2" not in seen(ws, "salary bands", "bob")  # the ACL column still applies in query mode


# -- default ACL, no ACL column ---------------------------------------------------------------
def test_source_default_acl_without_acl_column(db, ws):
    db.seed()
    add_source(ws, db, acl="everyone", acl_column=None)
    report = sync(ws)
    assert counts(report) == expect(added=3), report.errors
    # the acl column is not consulted: every known user reads every row, even the payroll one
    for user in ("bob", "dave", "fiona"):
        assert set(seen(ws, "salary bands hotel leave", user)) == {"1", "2", "3"}
    # changing the (ignored) column changes nothing
    db.update(1, acl="group:finance")
    assert counts(sync(ws)) == expect(unchanged=3)
    assert "1" in seen(ws, "hotel cap", "dave")


def test_source_default_acl_restricts_when_no_acl_column(db, ws):
    db.seed()
    add_source(ws, db, acl="group:finance", acl_column=None)
    sync(ws)
    assert set(seen(ws, "salary bands hotel leave", "fiona")) == {"1", "2", "3"}
    assert seen(ws, "salary bands hotel leave", "bob") == {}


# -- timestamps -------------------------------------------------------------------------------
TS_VARIANTS = [
    ("sqlite", "TEXT"), ("sqlite", "INTEGER"),
    ("postgresql", "TIMESTAMP"), ("postgresql", "TIMESTAMPTZ"), ("postgresql", "TIMESTAMP(0)"),
    ("mariadb", "DATETIME"), ("mariadb", "TIMESTAMP"), ("mariadb", "DATETIME(6)"),
]


@pytest.mark.parametrize("backend,ts_type", TS_VARIANTS, ids=[f"{b}-{t}" for b, t in TS_VARIANTS])
def test_updated_at_types_detect_a_one_second_change(backend, ts_type, tmp_path, ws):
    if backend != "sqlite":
        url = PG_URL if backend == "postgresql" else MARIADB_URL
    else:
        url = f"sqlite:///{tmp_path / 'source.db'}"
    d = Db(backend, url, _connect(backend, url), f"bastion_t_{uuid.uuid4().hex[:12]}")
    try:
        def stamp(t: datetime):
            if ts_type == "INTEGER":
                return int(t.replace(tzinfo=UTC).timestamp())
            if ts_type == "TIMESTAMPTZ":
                return t.replace(tzinfo=timezone(timedelta(hours=2)))
            return t

        d.create(ts_type)
        for id_, title, body, acl in ROWS:
            d.insert(id_, title, body, acl, updated_at=stamp(T0))
        add_source(ws, d)
        assert counts(sync(ws)) == expect(added=3)
        assert counts(sync(ws)) == expect(unchanged=3)  # timestamps read back identically
        # same length body, one second newer: only the timestamp can tell the change
        d.update(1, body="The hotel cap is 190 euro per night on business trips.", updated_at=stamp(T1))
        report = sync(ws)
        assert counts(report) == expect(updated=1, unchanged=2), report.errors
        assert "190 euro" in seen(ws, "hotel cap", "bob")["1"]
        assert counts(sync(ws)) == expect(unchanged=3)
    finally:
        try:
            d.run("DROP TABLE IF EXISTS {t}")
        finally:
            d.engine.dispose()


def test_unreadable_updated_at_falls_back_to_content_comparison(tmp_path, ws):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    d = Db("sqlite", url, _connect("sqlite", url), "docs")
    try:
        d.create("TEXT")
        d.insert(1, "Travel policy", "The hotel cap is 180 euro per night.", "everyone", updated_at="last tuesday")
        d.insert(2, "Staff handbook", "Annual leave is 28 working days.", "everyone", updated_at=T0)
        add_source(ws, d)
        assert counts(sync(ws)) == expect(added=2)
        assert counts(sync(ws)) == expect(unchanged=2)
        d.update(1, body="The hotel cap is 190 euro per night.")  # same length, same (useless) timestamp
        assert counts(sync(ws)) == expect(updated=1, unchanged=1)
        assert "190 euro" in seen(ws, "hotel cap", "dave")["1"]
    finally:
        d.engine.dispose()


# -- 8. errors ----------------------------------------------------------------------------------
UNREACHABLE = {
    "postgresql": "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/test",
    "mariadb": "mysql+pymysql://root:s3cret-pw@127.0.0.1:1/test",
    "sqlite": "sqlite:////nonexistent-bastion-dir/s3cret-pw/none.db",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreachable_database_is_a_clear_ingest_error(backend, ws):
    ws.sources.add_sql("rows", UNREACHABLE[backend], table="docs", id_column="id", template="{title}\n{body}")
    with pytest.raises(IngestError) as info:
        ws.sync()
    message = str(info.value)
    assert message.startswith("cannot read SQL source")
    if backend != "sqlite":
        assert "s3cret-pw" not in message and "***" in message  # the password is never printed
        assert "127.0.0.1" in message


@pytest.mark.parametrize("url,words", [
    ("this is not a url", ["invalid SQL source URL"]),
    ("nosuchdialect://user@host/db", ["invalid SQL source URL", "nosuchdialect"]),
    ("postgresql+nosuchdriver://postgres@127.0.0.1:5432/test", ["invalid SQL source URL", "nosuchdriver"]),
    # the plain mysql:// and mariadb:// forms pick MySQLdb, which is not installed: a hint, not an ImportError
    ("mysql://root:pw@127.0.0.1:3306/test", ["SQL source URL", "driver", "MySQLdb", "mysql+pymysql://"]),
    ("mariadb://root:pw@127.0.0.1:3306/test", ["SQL source URL", "driver", "MySQLdb", "mysql+pymysql://"]),
    ("postgresql+psycopg2://postgres:pw@127.0.0.1:5432/test", ["driver", "psycopg2", "postgresql+psycopg://"]),
])
def test_bad_url_is_a_clear_ingest_error(url, words, ws):
    ws.sources.add_sql("rows", url, table="docs", id_column="id", template="{title}\n{body}")
    with pytest.raises(IngestError) as info:
        ws.sync()
    for word in words:
        assert word in str(info.value)
    assert ":pw@" not in str(info.value)


def test_missing_table_is_a_clear_ingest_error(db, ws):
    add_source(ws, db)  # the table was never created
    with pytest.raises(IngestError) as info:
        ws.sync()
    assert str(info.value).startswith("cannot read SQL source")
    assert db.table in str(info.value)


@pytest.mark.parametrize("option,value,column", [
    ("template", "{title}\n{content}", "content"),
    ("id_column", "row_id", "row_id"),
    ("updated_at_column", "modified", "modified"),
    ("acl_column", "readers", "readers"),
    ("title_column", "heading", "heading"),
])
def test_missing_column_is_named(db, ws, option, value, column):
    db.seed()
    add_source(ws, db, **{option: value})
    with pytest.raises(IngestError) as info:
        ws.sync()
    assert f"'{column}'" in str(info.value)
    assert "updated_at" in str(info.value)  # and it lists the columns there are
    # while the error (and its traceback) is still held, the source is not left locked
    db.insert(9, "Later row", "Written after the failed sync.", "everyone")


def test_column_renamed_after_sync_fails_without_wiping_the_index(db, ws):
    db.seed()
    add_source(ws, db)
    sync(ws)
    db.run("ALTER TABLE {t} RENAME COLUMN body TO content")
    with pytest.raises(IngestError, match="'body'"):
        ws.sync()
    # the failed run deleted nothing: what was indexed is still there for the right people
    assert set(seen(ws, "salary bands hotel leave", "alice")) == {"1", "2", "3"}
    assert "2" not in seen(ws, "salary bands", "bob")


def test_too_many_rows_is_a_clear_ingest_error(db, ws):
    db.seed()
    ws.config.ingest.max_rows_per_table = 1  # 3 rows: the cursor is left mid-result
    add_source(ws, db)
    with pytest.raises(IngestError, match="more than 1 rows"):
        ws.sync()
    db.insert(9, "Later row", "Written after the failed sync.", "everyone")  # the source is not left locked
    assert seen(ws, "hotel", "alice") == {}
