"""A renamed column in a real database raises a schema alert with before/after; renaming it back clears it."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from bastion.core.errors import IngestError
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

URLS = {"sqlite": None, "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test"}


@pytest.fixture(params=list(URLS))
def table(request, tmp_path):
    url = URLS[request.param] or f"sqlite:///{tmp_path / 'src.db'}"
    engine = create_engine(url)
    name = f"bastion_m_{uuid.uuid4().hex[:10]}"
    with engine.begin() as c:
        c.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, title VARCHAR(200), body TEXT, region VARCHAR(40))"))
        for i, (t, b) in enumerate([("Travel", "The hotel cap is 180 euro per night."),
                                    ("Leave", "Annual leave is 28 working days."),
                                    ("Payroll", "Salaries are paid on the 25th.")], 1):
            c.execute(text(f"INSERT INTO {name} VALUES (:i, :t, :b, 'EU')"), {"i": i, "t": t, "b": b})
    yield url, engine, name
    with engine.begin() as c:
        c.execute(text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


def rename(engine, table: str, old: str, new: str) -> None:
    with engine.begin() as c:
        c.execute(text(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}"))


def test_renamed_sql_column(table, tmp_path):
    url, engine, name = table
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    ws.directory.add_user("alice")
    ws.sources.add_sql("crm", url, table=name, id_column="id", template="{title}\n{body}", acl="everyone")
    [r] = ws.sync("crm")
    assert r.documents_added == 3 and r.alerts == []

    rename(engine, name, "region", "area")  # a column the template does not use: the sync goes on
    [r] = ws.sync("crm")
    [alert] = r.alerts
    assert alert["kind"] == "schema" and alert["check"] == f"schema:{name}"
    assert [c.split()[0] for c in alert["detail"]["removed"]] == ["region"]
    assert [c.split()[0] for c in alert["detail"]["added"]] == ["area"]
    assert any(c.startswith("body ") for c in alert["detail"]["before"])  # types are recorded with the names

    rename(engine, name, "body", "content")  # a column the text comes from: the sync fails, loudly
    with pytest.raises(IngestError, match="body"):
        ws.sync("crm")
    alerts = {a["check"]: a for a in ws.monitor.alerts(source="crm")}
    assert {"parse.sync", f"schema:{name}"} <= set(alerts)
    assert "content" in " ".join(alerts[f"schema:{name}"]["detail"]["added"])
    hits = ws.search("hotel cap", ws.principal("alice"))
    assert hits and "180 euro" in hits[0].text  # the last good rows are still served

    rename(engine, name, "content", "body")
    rename(engine, name, "area", "region")
    [r] = ws.sync("crm")
    assert r.status == "completed" and r.alerts == [] and ws.monitor.alerts(source="crm") == []
    ws.close()


def test_resolving_a_schema_alert_accepts_the_new_columns(table, tmp_path):
    url, engine, name = table
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    ws.sources.add_sql("crm", url, table=name, id_column="id", template="{title}\n{body}", acl="everyone")
    ws.sync("crm")
    rename(engine, name, "region", "area")
    [r] = ws.sync("crm")
    [alert] = r.alerts
    assert ws.monitor.acknowledge(alert["id"], "ops")["status"] == "acknowledged"
    [r] = ws.sync("crm")
    assert [a["status"] for a in r.alerts] == ["acknowledged"]  # still seen, still acknowledged
    assert ws.monitor.resolve(alert["id"], "ops")["resolved_by"] == "ops"
    [r] = ws.sync("crm")
    assert r.alerts == []  # the renamed column is now the accepted schema
    ws.close()
