"""Alerts reach webhooks (retries, timeout, signature) without holding up a sync; answers citing a
source with open alerts carry a warning; lineage walks both ways; the report is self-contained."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from bastion.cli.app import app
from bastion.core.errors import ConfigError
from tests.monitoring.conftest import TOPICS, mojibake, open_checks, sync


class Hook:
    """A real HTTP endpoint: fails the first ``fail`` requests with 500, can hold requests until released."""

    def __init__(self, fail: int = 0, hold: bool = False):
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.fail, self.hold = fail, hold
        self.release, self.entered = threading.Event(), threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                hook.entered.set()
                if hook.hold:
                    hook.release.wait(10)
                if hook.fail > 0:
                    hook.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                hook.received.append(json.loads(body))
                hook.headers.append({**self.headers, "_raw": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def hook_factory():
    hooks = []

    def make(**kw):
        hooks.append(Hook(**kw))
        return hooks[-1]

    yield make
    for h in hooks:
        h.close()


def test_webhook_gets_opened_and_resolved_events_after_retries(open_ws, src, hook_factory, monkeypatch):
    hook = hook_factory(fail=2)
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    ws = open_ws(f'[[monitoring.webhooks]]\nurl = "{hook.url}"\nretries = 3\nbackoff_s = 0.05\nsecret_env = "HOOK_SECRET"')
    sync(ws)
    src.remove([n for n, _ in TOPICS[::2]])
    sync(ws)
    assert ws.monitor.notifier.wait(10)
    opened = [p for p in hook.received if p["event"] == "opened"]
    assert {p["alert"]["check"] for p in opened} == {"volume.removed"}
    assert opened[0]["alert"]["kind"] == "volume" and opened[0]["alert"]["source"] == "docs"
    raw = hook.headers[0]["_raw"]
    assert hook.headers[0]["x-bastion-signature"] == "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert ws.monitor.notifier.pending() == []  # delivered on the third try
    src.healthy()
    sync(ws)
    assert ws.monitor.notifier.wait(10)
    assert [p["event"] for p in hook.received] == ["opened", "resolved"]


def test_a_hanging_webhook_never_blocks_the_sync_and_is_retried_later(open_ws, src, hook_factory):
    hook = hook_factory(hold=True)
    ws = open_ws(f'[[monitoring.webhooks]]\nurl = "{hook.url}"\ntimeout_s = 0.5\nretries = 0')
    sync(ws)
    src.remove([n for n, _ in TOPICS[::2]])
    report = sync(ws)  # returns while the endpoint still holds the delivery
    assert report.status == "completed" and report.alerts
    assert hook.entered.wait(5) and not hook.received
    ws.monitor.notifier.wait(5)
    [pending] = ws.monitor.notifier.pending()
    assert pending["attempts"] == 1 and "Timeout" in pending["last_error"]
    hook.hold = False
    hook.release.set()
    ws.monitor.run()  # e.g. from cron: the outbox is retried
    assert ws.monitor.notifier.wait(10) and ws.monitor.notifier.pending() == []
    assert any(p["event"] == "opened" for p in hook.received)


def test_bad_webhook_config_names_the_problem(open_ws, src):
    with pytest.raises(ConfigError, match="webhook url 'ftp://x'"):
        open_ws('[[monitoring.webhooks]]\nurl = "ftp://x"')


def test_answers_citing_a_source_with_open_alerts_carry_a_warning(open_ws, src, tmp_path):
    ws = open_ws()
    (tmp_path / "clean").mkdir()
    ws.sources.add_folder("clean", tmp_path / "clean", acl="group:staff")
    (tmp_path / "clean" / "canteen.md").write_text("# Canteen\nThe canteen serves lunch from noon to two.", encoding="utf-8")
    ws.sync()
    for name, text in TOPICS[6:8]:
        src.write(name, mojibake(text))
    sync(ws)
    assert "quality.garbled" in open_checks(ws)
    alice = ws.principal("alice")
    warned = ws.ask("What is the hotel cap per night on business trips?", alice, mode="extract", source="docs")
    assert warned.citations and {w["source"] for w in warned.warnings} == {"docs"}
    assert warned.warnings[0]["kind"] == "quality" and ws.lineage(warned.lineage_id)["warnings"] == warned.warnings
    clean = ws.ask("The canteen serves lunch from noon to when?", alice, mode="extract", source="clean")
    assert clean.citations and clean.warnings == []  # positive control: a healthy source warns of nothing


def test_lineage_walks_from_a_document_version_to_the_answers_that_used_it(open_ws, src):
    from bastion.lineage import trace_answer, trace_document, trace_version

    ws = open_ws()
    sync(ws)
    a = ws.ask("What is the hotel cap per night on business trips?", ws.principal("alice"), mode="extract")
    assert a.citations
    cited = a.citations[0]
    doc = trace_document(ws.catalog, f"docs:{cited.path}")
    [version] = doc["versions"]
    assert version["run"]["embedder_id"] == ws.embedder.id
    assert [x["lineage_id"] for x in version["answers"]] == [a.lineage_id] and version["answers"][0]["cited"]
    assert [x["lineage_id"] for x in trace_version(ws.catalog, cited.version_id)["answers"]] == [a.lineage_id]
    up = trace_answer(ws.catalog, ws.lineage(a.lineage_id))
    first = next(c for c in up if c["chunk_id"] == cited.chunk_id)
    assert first["cited"] and first["source"] == "docs" and first["version"]["run"]["id"] is not None
    # a new version: the old one keeps its answers, the new one has none yet
    src.write(cited.path, TOPICS[0][1] + "\nRevised.")
    sync(ws)
    versions = trace_document(ws.catalog, doc["doc_id"])["versions"]
    assert [len(v["answers"]) for v in versions] == [1, 0]
    assert versions[0]["status"] == "superseded"


def test_cli_monitor_status_json_history_ack_resolve_and_report(open_ws, src, tmp_path):
    ws = open_ws()
    home = str(ws.home)
    runner = CliRunner()
    assert runner.invoke(app, ["--home", home, "sync", "--json"]).exit_code == 0
    src.remove([n for n, _ in TOPICS[:8]])
    r = runner.invoke(app, ["--home", home, "sync", "docs"])
    assert r.exit_code == 3 and "QUARANTINED" in r.output and "bastion sync docs --accept" in r.output
    r = runner.invoke(app, ["--home", home, "monitor", "status", "--json"])
    data = json.loads(r.output)
    [alert] = [a for a in data["alerts"] if a["check"] == "quarantine"]
    assert set(alert) >= {"id", "source", "kind", "status", "message", "opened_at"} and alert["status"] == "open"
    assert data["sources"][0]["name"] == "docs" and data["sources"][0]["last_run"]["status"] == "quarantined"
    r = runner.invoke(app, ["--home", home, "monitor", "ack", str(alert["id"])])
    assert r.exit_code == 0 and "acknowledged" in r.output
    r = runner.invoke(app, ["--home", home, "monitor", "ack", str(alert["id"])])
    assert r.exit_code == 2 and "already acknowledged" in r.output
    hist = json.loads(runner.invoke(app, ["--home", home, "monitor", "history", "docs", "--json"]).output)
    assert [x["status"] for x in hist["runs"]] == ["quarantined", "completed"]
    assert hist["runs"][0]["metrics"]["delta"]["removed"] == 8
    out = tmp_path / "health.html"
    r = runner.invoke(app, ["--home", home, "monitor", "report", "--out", str(out)])
    html = out.read_text(encoding="utf-8")
    assert r.exit_code == 0 and "<svg" in html and "sync not published" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    r = runner.invoke(app, ["--home", home, "monitor", "resolve", str(alert["id"])])
    assert r.exit_code == 0 and "resolved" in r.output
    r = runner.invoke(app, ["--home", home, "audit", "list", "--json"])
    assert {"alert.acknowledge", "alert.resolve"} <= {e["action"] for e in json.loads(r.output)}
