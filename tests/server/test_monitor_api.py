"""Data health over the API: admins see and handle alerts, members are refused; answers carry warnings."""
from __future__ import annotations

from tests.conftest import write
from tests.server.conftest import auth


def _garble(served, tmp_path):
    """Most of the live text of the docs source turns into mojibake (published: 1 document changed)."""
    root = tmp_path / "docs"
    text = "# 差旅报销\n\n住宿费用每晚不超过 180 欧元。\n"
    write(root / "hr" / "报销.md", text.encode("utf-8").decode("cp1252", errors="replace"))
    [r] = served.ws.sync("docs")
    return r


def test_admin_sees_alerts_acknowledges_and_resolves_them_members_cannot(client, served, tmp_path):
    r = _garble(served, tmp_path)
    assert [a["check"] for a in r.alerts] == ["quality.garbled"]
    root, alice = auth(served.keys["root"]), auth(served.keys["alice"])
    assert client.get("/api/v1/monitor", headers=alice).status_code == 403
    data = client.get("/api/v1/monitor", headers=root).json()
    [alert] = data["alerts"]
    assert alert["kind"] == "quality" and alert["status"] == "open"
    assert data["sources"][0]["name"] == "docs" and data["sources"][0]["open_alerts"] == 1
    hist = client.get("/api/v1/monitor/sources/docs/history", headers=root).json()["runs"]
    assert hist[0]["metrics"]["state"]["garbled_ratio"] > 0.05
    assert client.get("/api/v1/monitor/sources/nope/history", headers=root).status_code == 404
    assert client.post(f"/api/v1/monitor/alerts/{alert['id']}/acknowledge", headers=alice).status_code == 403
    r = client.post(f"/api/v1/monitor/alerts/{alert['id']}/acknowledge", headers=root)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "root"
    assert client.post(f"/api/v1/monitor/alerts/{alert['id']}/acknowledge", headers=root).status_code == 409
    assert client.post("/api/v1/monitor/alerts/999999/resolve", headers=root).status_code == 404
    r = client.post(f"/api/v1/monitor/alerts/{alert['id']}/resolve", headers=root)
    assert r.json()["status"] == "resolved"
    entries = client.get("/api/v1/audit", params={"action": "alert.resolve"}, headers=root).json()["entries"]
    assert [e["target"] for e in entries] == [str(alert["id"])]


def test_answers_from_a_source_with_open_alerts_carry_the_warning(client, served, tmp_path):
    alice = auth(served.keys["alice"])
    body = {"question": "住宿费用每晚不超过多少?"}
    before = client.post("/api/v1/ask", json=body, headers=alice).json()
    assert before["citations"] and before["warnings"] == []  # healthy: no warning
    _garble(served, tmp_path)
    after = client.post("/api/v1/ask", json=body, headers=alice).json()
    assert after["citations"] and [w["kind"] for w in after["warnings"]] == ["quality"]
    chat = client.post("/v1/chat/completions", headers=alice,
                       json={"model": "bastion", "messages": [{"role": "user", "content": body["question"]}]}).json()
    assert chat["bastion"]["warnings"][0]["source"] == "docs"


def test_report_is_html_with_its_own_strict_policy(client, served, tmp_path):
    _garble(served, tmp_path)
    r = client.get("/api/v1/monitor/report", headers=auth(served.keys["root"]))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"] and "default-src 'none'" in r.headers["content-security-policy"]
    assert "<svg" in r.text and "garbled" in r.text
    assert client.get("/api/v1/monitor/report", headers=auth(served.keys["bob"])).status_code == 403
