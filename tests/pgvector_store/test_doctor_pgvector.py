"""``bastion doctor`` on a workspace whose chunk index is on PostgreSQL + pgvector: a healthy store is
reported ok, and each fault an operator meets (an interrupted HNSW build, a dropped index, rows out of
step with the catalog, lost keyword statistics, a database that does not answer) is one line saying
what to do, which works when done."""
from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import free_port, write

pytestmark = pytest.mark.services


def _workspace(home: Path, url: str, docs: Path) -> Path:
    Workspace.init(home).close()
    # ann_min_rows = 1: the HNSW index is built after the first sync, as it is on a large table
    (home / "bastion.toml").write_text(f'[store]\nbackend = "pgvector"\nurl = "{url}"\nann_min_rows = 1\n', encoding="utf-8")
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.close()
    return home


def _doctor(home: Path, *args: str):
    return CliRunner().invoke(cli.app, ["--home", str(home), "doctor", *args], env={"COLUMNS": "250"})


def _doctor_json(home: Path) -> tuple[int, dict]:
    r = _doctor(home, "--json")
    return r.exit_code, json.loads(r.stdout)


def _sql(url: str, statement: str) -> None:
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def _store_problems(rep: dict) -> list[str]:
    return [p for p in rep["problems"] if p.startswith("store:")]


@pytest.fixture
def synced(tmp_path, pg_url, monkeypatch):
    docs = tmp_path / "docs"
    write(docs / "travel.md", "# Travel policy\n\nHotel costs are capped at EUR 180 per night in Europe.\n")
    write(docs / "leave.md", "# Leave\n\nAnnual leave is 28 working days.\n")
    write(docs / "报销.md", "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n")
    home = _workspace(tmp_path / "ws", pg_url, docs)
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    r = CliRunner().invoke(cli.app, ["--home", str(home), "sync"])
    assert r.exit_code == 0, r.output
    return home, docs


def _assert_healthy(home: Path) -> dict:
    code, rep = _doctor_json(home)
    store = rep["workspace"]["store"]
    assert _store_problems(rep) == [] and code in (0, 1), rep["problems"]  # (1 only for the machine's LLM runtime)
    assert store["reachable"] and store["hnsw"] == "valid"
    assert store["chunk_rows"] == store["catalog_chunks"] == rep["workspace"]["index"]["chunks"] > 0
    assert store["term_stats"]["chunks"] == store["chunk_rows"]
    assert tuple(int(p) for p in store["pgvector"].split(".")[:2]) >= (0, 8)
    return rep


def test_healthy_store_is_reported_ok_in_text_and_json(synced):
    home, _ = synced
    rep = _assert_healthy(home)
    assert rep["workspace"]["store"]["chunk_rows"] == 3
    text = _doctor(home).output
    assert "store" in text and "3 chunk rows; HNSW index valid; term statistics present" in text
    assert "problem: store" not in text


def test_invalid_hnsw_index_is_reported_and_the_advice_repairs_it(synced, pg_url):
    home, docs = synced
    _assert_healthy(home)  # positive control: the same store, before the fault
    # what an interrupted CREATE INDEX CONCURRENTLY leaves behind: the index, marked invalid
    _sql(pg_url, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'bastion_chunks_embedding'::regclass")
    r = _doctor(home)
    assert r.exit_code == 1
    assert "HNSW index invalid" in r.output
    [line] = _store_problems(_doctor_json(home)[1])
    assert "bastion_chunks_embedding is INVALID" in line and "drops it and builds it again" in line
    write(docs / "new.md", "# New\n\nA changed document.\n")  # the advice: a sync that writes chunks
    assert CliRunner().invoke(cli.app, ["--home", str(home), "sync"]).exit_code == 0
    _assert_healthy(home)


def test_dropped_hnsw_index_on_a_table_past_ann_min_rows(synced, pg_url):
    home, docs = synced
    _assert_healthy(home)
    _sql(pg_url, "DROP INDEX bastion_chunks_embedding")
    code, rep = _doctor_json(home)
    assert code == 1 and rep["workspace"]["store"]["hnsw"] == "absent"
    [line] = _store_problems(rep)
    assert "no HNSW index (bastion_chunks_embedding) on 3 chunks" in line and "ann_min_rows = 1" in line
    (docs / "leave.md").unlink()  # a sync that deletes chunks builds it
    assert CliRunner().invoke(cli.app, ["--home", str(home), "sync"]).exit_code == 0
    _assert_healthy(home)


def test_rows_out_of_step_with_the_catalog_and_lost_term_statistics(synced, pg_url):
    home, _ = synced
    _assert_healthy(home)
    _sql(pg_url, "DELETE FROM bastion_term_stats")
    [line] = _store_problems(_doctor_json(home)[1])
    assert "term statistics (bastion_term_stats) are missing" in line and "DELETE FROM bastion_term_stats" in line
    ws = Workspace.open(home, embedder=HashEmbedder())  # the advice: the next command that opens the store
    assert ws.store.count() == 3
    ws.close()
    _assert_healthy(home)
    _sql(pg_url, "DELETE FROM bastion_chunks WHERE chunk_id = (SELECT min(chunk_id) FROM bastion_chunks)")
    code, rep = _doctor_json(home)
    assert code == 1
    lines = _store_problems(rep)
    assert any("2 chunk rows in bastion_chunks, but the catalog's indexed documents have 3 chunks" in p
               and "bastion rebuild" in p for p in lines), lines
    assert CliRunner().invoke(cli.app, ["--home", str(home), "rebuild"]).exit_code == 0
    _assert_healthy(home)


def test_a_store_nobody_answers_at_is_named(tmp_path):
    url = f"postgresql+psycopg://bastion@127.0.0.1:{free_port()}/bastion"
    home = tmp_path / "ws"
    Workspace.init(home).close()
    (home / "bastion.toml").write_text(f'[store]\nbackend = "pgvector"\nurl = "{url}"\n', encoding="utf-8")
    code, rep = _doctor_json(home)
    assert code == 1 and rep["workspace"]["store"]["reachable"] is False
    [line] = _store_problems(rep)
    assert "cannot connect to the" in line and "127.0.0.1" in line and "[store] url" in line
    assert "pgvector: not reachable" in _doctor(home).output


def _open_store(home: Path) -> None:
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert ws.store.count() == 3  # the store opens on first use
    ws.close()


def test_label_copies_out_of_step_are_reported_and_the_advice_repairs_them(synced, pg_url):
    home, _ = synced
    toml = home / "bastion.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + "label_vectors = true\n", encoding="utf-8")
    _open_store(home)  # the first open with the setting makes the copies
    rep = _assert_healthy(home)
    assert rep["workspace"]["store"]["label_vectors"] == {"copies": 3, "chunk_labels": 3}
    assert "3 label vector copies" in _doctor(home).output
    _sql(pg_url, "DELETE FROM bastion_label_vectors WHERE chunk_id = (SELECT min(chunk_id) FROM bastion_label_vectors)")
    code, rep = _doctor_json(home)
    [line] = _store_problems(rep)
    assert code == 1 and "2 label vector copies in bastion_label_vectors for 3 chunk labels" in line
    _sql(pg_url, "DROP TABLE bastion_label_vectors; DELETE FROM bastion_store_meta WHERE key = 'label_vectors'")
    code, rep = _doctor_json(home)
    assert _store_problems(rep) == [] and any("label copies are not made yet" in n for n in rep["notes"]), rep
    _open_store(home)  # the advice: the next command that opens the store makes them again
    assert _assert_healthy(home)["workspace"]["store"]["label_vectors"] == {"copies": 3, "chunk_labels": 3}
