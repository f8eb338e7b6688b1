"""Fault injection: each broken source raises its alert, and a healthy re-sync leaves none open."""
from __future__ import annotations

from datetime import timedelta

import numpy as np

from bastion.catalog.models import IngestRunRow, utcnow
from bastion.testing import HashEmbedder
from tests.monitoring.conftest import TOPICS, broken, mojibake, open_checks, sync


def seen(ws, query: str, user: str = "alice") -> set[str]:
    return {h.path for h in ws.search(query, ws.principal(user), 20)}


def baseline(ws, runs: int = 3) -> None:
    for _ in range(runs):
        r = sync(ws)
        assert r.status == "completed"
    assert open_checks(ws) == set()


def test_stalled_source_exceeds_its_change_sla_then_recovers(open_ws, src):
    src.healthy(age_s=3 * 3600)  # nothing changed for three hours
    ws = open_ws('[monitoring.sources.docs]\nchange_sla = "1h"')
    report = sync(ws)
    [alert] = [a for a in report.alerts if a["check"] == "freshness.change"]
    assert alert["kind"] == "freshness" and alert["status"] == "open" and "SLA of 1h" in alert["message"]
    stored = ws.monitor.history("docs", 1)[0]["metrics"]["freshness"]  # measured and kept with the run
    assert 3 * 3600 - 60 <= stored["newest_change_age_s"] <= 3 * 3600 + 600 and stored["since_previous_sync_s"] is None
    # the same thresholds leave another source alone: the override is per source
    assert ws.config.monitoring.for_source("other").change_sla is None
    src.write("travel.md", TOPICS[0][1] + "\nUpdated today.")  # the feed moves again
    report = sync(ws)
    assert report.alerts == [] and open_checks(ws) == set()
    [resolved] = ws.monitor.alerts(source="docs", status="resolved")
    assert resolved["id"] == alert["id"] and resolved["resolved_by"] is None


def test_no_successful_sync_within_the_sla_alerts_on_monitor_run(open_ws, src):
    ws = open_ws()
    sync(ws)
    assert ws.monitor.run() == []  # within the default 3 days
    alerts = ws.monitor.run(now=utcnow() + timedelta(days=4))
    assert [(a["kind"], a["check"]) for a in alerts] == [("freshness", "freshness.sync")]
    assert "over its SLA of 3d" in alerts[0]["message"]
    sync(ws)
    assert open_checks(ws) == set()


def test_half_the_documents_vanish(open_ws, src):
    ws = open_ws()
    baseline(ws)
    gone = [name for name, _ in TOPICS[::2]]
    src.remove(gone)
    report = sync(ws)
    assert report.status == "completed"  # 50 % is below the quarantine line (60 %): published, and alerted
    assert {"volume.removed", "volume.documents"} <= {a["check"] for a in report.alerts}
    removed = next(a for a in report.alerts if a["check"] == "volume.removed")
    assert removed["kind"] == "volume" and removed["detail"]["ratio"] == 0.5
    assert "travel.md" not in seen(ws, "hotel cap per night")
    src.healthy()
    assert sync(ws).alerts == [] and open_checks(ws) == set()
    assert "travel.md" in seen(ws, "hotel cap per night")


def test_a_fifth_of_the_text_garbled(open_ws, src):
    ws = open_ws()
    baseline(ws, 1)
    for name, text in TOPICS[6:8]:  # 2 of 10 documents come back double-encoded
        src.write(name, mojibake(text))
    report = sync(ws)
    [alert] = [a for a in report.alerts if a["check"] == "quality.garbled"]
    assert alert["kind"] == "quality" and alert["detail"]["ratio"] >= 0.15
    history = ws.monitor.history("docs", 1)[0]["metrics"]
    assert history["delta"]["garbled_chunks"] == 2 and history["state"]["garbled_ratio"] >= 0.15
    src.healthy()
    assert sync(ws).alerts == [] and open_checks(ws) == set()


def test_parse_failure_burst_keeps_old_versions(open_ws, src):
    ws = open_ws()
    src.write("report.pdf", b"%PDF-1.4 not really a pdf")
    baseline_report = sync(ws)
    assert baseline_report.documents_failed == 1 and open_checks(ws) == set()  # 1 failure in 11 (9 %) is under the 10 % line
    broken = [name for name, _ in TOPICS[:4]]
    for name in broken:  # a converter starts writing binary junk into the markdown files
        src.write(name, b"\x00\x01\x02\xff\xfe" * 50)
    report = sync(ws)
    assert report.documents_failed >= 4
    [alert] = [a for a in report.alerts if a["check"] == "parse.failures"]
    assert alert["kind"] == "parse" and alert["detail"]["failed"] == 5
    assert "travel.md" in seen(ws, "hotel cap per night")  # the last good version is still served
    src.healthy()
    (src.root / "report.pdf").unlink()
    assert sync(ws).alerts == [] and open_checks(ws) == set()


class SwappedModel(HashEmbedder):
    """Same id, other model: what an endpoint that silently started serving another model looks like."""

    def _vec(self, text: str) -> np.ndarray:
        return super()._vec("swapped " + text[::-1])


def test_swapped_embedding_model_behind_the_same_id(open_ws, src):
    ws = open_ws()
    baseline(ws, 1)
    ws.close()
    ws = open_ws(embedder=SwappedModel())
    src.write("travel.md", TOPICS[0][1] + "\nNew: rail passes are reimbursed.")
    report = sync(ws)
    [alert] = [a for a in report.alerts if a["check"] == "drift.canary"]
    assert alert["kind"] == "drift" and alert["detail"]["min_cosine"] < 0.98
    ws.close()
    ws = open_ws()  # the original model is back
    src.write("travel.md", TOPICS[0][1] + "\nNew: rail passes are reimbursed in full.")
    assert sync(ws).alerts == [] and open_checks(ws) == set()


def test_quarantine_keeps_the_old_documents_searchable(open_ws, src):
    ws = open_ws()
    baseline(ws)
    vanished = [name for name, _ in TOPICS[:8]]  # an unmounted share: 80 % gone
    src.remove(vanished)
    report = sync(ws)
    assert report.status == "quarantined" and report.documents_deleted == 0
    assert "8 of 10 documents" in report.quarantined[0]
    assert "travel.md" in seen(ws, "hotel cap per night")  # nothing was unpublished
    assert "差旅.md" in seen(ws, "出差住宿")
    with ws.catalog.session() as s:
        assert s.get(IngestRunRow, report.run_id).status == "quarantined"
    [alert] = [a for a in report.alerts if a["check"] == "quarantine"]
    assert alert["kind"] == "volume" and alert["severity"] == "hard" and "--accept" in alert["message"]
    src.healthy()  # the share is mounted again
    again = sync(ws)
    assert again.status == "completed" and again.alerts == [] and open_checks(ws) == set()


def test_quarantined_sync_published_deliberately_with_accept(open_ws, src):
    ws = open_ws()
    baseline(ws, 1)
    src.remove([name for name, _ in TOPICS[:8]])
    assert sync(ws).status == "quarantined"
    assert "travel.md" in seen(ws, "hotel cap per night")
    accepted = sync(ws, accept=True)
    assert accepted.status == "completed" and accepted.documents_deleted == 8
    assert "travel.md" not in seen(ws, "hotel cap per night")
    assert "保密.md" in seen(ws, "客户数据")  # what remains is still served
    assert "quarantine" not in open_checks(ws)  # published: the quarantine alert is resolved
    assert "volume.removed" in open_checks(ws)  # the removal itself is still worth a look


def test_garbled_majority_is_quarantined(open_ws, src):
    ws = open_ws()
    baseline(ws, 1)
    for name, text in TOPICS[:8]:
        src.write(name, broken(text))
    report = sync(ws)
    assert report.status == "quarantined" and report.quarantined[0].startswith("quality:")
    assert "差旅.md" in seen(ws, "出差住宿")  # the readable version is still the one served
    assert {"quarantine"} <= open_checks(ws) and "quality.garbled" not in open_checks(ws)


def test_a_failing_check_never_fails_a_published_sync(open_ws, src, monkeypatch):
    ws = open_ws()
    baseline(ws, 1)

    def broken(*a, **k):
        raise RuntimeError("catalog hiccup")

    monkeypatch.setattr(ws.monitor, "after_sync", broken)
    src.write("travel.md", TOPICS[0][1] + "\nRevised.")
    report = sync(ws)
    assert report.status == "completed" and report.documents_updated == 1
    assert report.errors == [{"file": None, "reason": "data checks failed: RuntimeError: catalog hiccup"}]
    assert "travel.md" in seen(ws, "Revised hotel cap")


def test_rebuild_is_never_quarantined(open_ws, src):
    ws = open_ws()
    baseline(ws, 1)
    for name, text in TOPICS[:8]:  # the source went bad, and the index is rebuilt from it anyway
        src.write(name, broken(text))
    [report] = ws.rebuild_index()
    assert report.status == "completed" and report.documents_added == 10
    assert "quality.garbled" in open_checks(ws)  # published deliberately, and still flagged
