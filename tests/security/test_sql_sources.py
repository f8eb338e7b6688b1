"""Findings 2, 12 and 16 for SQL sources, on the real PostgreSQL and MariaDB servers and a SQLite
file: an ACL column's comments never grant access; a value that is not text (an integer, NULL,
bytes) withdraws that row alone with an error naming it; duplicate ids are reported and only one
row per id is live."""
from __future__ import annotations

import pytest

from tests.connectors.test_sql import add_source, sync

pytestmark = pytest.mark.services


def _texts(ws, query, user):
    return [h.text for h in ws.search(query, ws.principal(user), 10, mode="bm25")]


def test_a_comment_with_a_comma_in_an_acl_column_grants_nothing(db, ws):
    db.seed()
    db.insert(4, "Ticket 3", "COMMA-CANARY-272 bonus pool is 3 million.", "# restricted: group:hr,everyone\ngroup:finance")
    add_source(ws, db)
    report = sync(ws)
    assert report.documents_failed == 0
    assert not any("COMMA-CANARY-272" in t for t in _texts(ws, "COMMA-CANARY-272 bonus pool", "bob"))
    assert any("COMMA-CANARY-272" in t for t in _texts(ws, "COMMA-CANARY-272 bonus pool", "alice"))  # positive control


def test_a_non_text_acl_value_withdraws_that_row_only(db, ws):
    num = {"sqlite": "INTEGER", "postgresql": "INTEGER", "mariadb": "INT"}[db.kind]
    db.run(f"CREATE TABLE {{t}} (id INTEGER, body TEXT, acl {num})")
    db.run("INSERT INTO {t} (id, body, acl) VALUES (1, 'SQLINTACL-CANARY integer acl', 5)")
    db.run("INSERT INTO {t} (id, body, acl) VALUES (2, 'SQLNULLACL-CANARY null acl', NULL)")
    db.run("INSERT INTO {t} (id, body, acl) VALUES (3, 'GOODROW-CANARY readable row', NULL)")
    text_db = db.kind != "sqlite"
    if not text_db:  # SQLite keeps any type in any column: a text value in the same column is readable
        db.run("UPDATE {t} SET acl = 'everyone' WHERE id = 3")
    ws.sources.add_sql("ints", db.url, table=db.table, id_column="id", template="{body}", acl_column="acl")
    [report] = ws.sync("ints")
    reasons = {e["file"]: e["reason"] for e in report.errors}
    assert "1" in reasons and "int" in reasons["1"] and "withdrawn" in reasons["1"]
    assert "2" in reasons and "NULL" in reasons["2"]
    for user in ("alice", "bob"):
        assert not any("SQLINTACL" in t or "SQLNULLACL" in t for t in _texts(ws, "SQLINTACL-CANARY SQLNULLACL-CANARY acl", user))
    if not text_db:
        assert any("GOODROW-CANARY" in t for t in _texts(ws, "GOODROW-CANARY readable row", "bob"))  # the rest is synced


def test_a_bytes_acl_value_withdraws_the_row(tmp_path, ws):
    import sqlite3

    path = tmp_path / "blob.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER, body TEXT, acl BLOB)")
    con.execute("INSERT INTO t VALUES (1, 'BLOBACL-CANARY bytes acl', ?)", (b"everyone",))
    con.execute("INSERT INTO t VALUES (2, 'TEXTACL-CANARY text acl', 'everyone')")
    con.commit()
    con.close()
    ws.sources.add_sql("blobs", f"sqlite:///{path}", table="t", id_column="id", template="{body}", acl_column="acl")
    [report] = ws.sync("blobs")
    assert [e["file"] for e in report.errors] == ["1"] and "bytes" in report.errors[0]["reason"]
    assert not any("BLOBACL" in t for t in _texts(ws, "BLOBACL-CANARY bytes acl", "bob"))
    assert any("TEXTACL" in t for t in _texts(ws, "TEXTACL-CANARY text acl", "bob"))  # positive control


def test_duplicate_ids_are_reported_and_only_one_row_per_id_is_live(db, ws):
    db.run(f"CREATE TABLE {{t}} (id INTEGER, title VARCHAR(100), body TEXT, updated_at {'TIMESTAMP' if db.kind != 'mariadb' else 'DATETIME'}, acl VARCHAR(200))")
    db.run("INSERT INTO {t} (id, title, body, acl) VALUES (5, 'Dup A', 'DUPCANARY version A finance', 'group:finance')")
    db.run("INSERT INTO {t} (id, title, body, acl) VALUES (5, 'Dup B', 'DUPCANARY version B everyone', 'everyone')")
    db.run("INSERT INTO {t} (id, title, body, acl) VALUES (6, 'Other', 'OTHERCANARY unique row', 'everyone')")
    add_source(ws, db, updated_at_column=None)
    report = sync(ws)
    dup = [e for e in report.skipped if e["file"] == "5"]
    assert len(dup) == 1 and "duplicate id" in dup[0]["reason"]
    live = [t for t in _texts(ws, "DUPCANARY version", "alice") if "DUPCANARY" in t]
    assert len(live) == 1  # one version of document 5, never both
    assert len(ws.store.rows_for([d.id for d in _doc_rows(ws, "5")])) == 1
    assert any("OTHERCANARY" in t for t in _texts(ws, "OTHERCANARY unique row", "bob"))  # positive control


def _doc_rows(ws, key):
    from sqlalchemy import select

    from bastion.catalog.models import DocumentRow

    with ws.catalog.session() as s:
        return list(s.scalars(select(DocumentRow).where(DocumentRow.key == key)))
