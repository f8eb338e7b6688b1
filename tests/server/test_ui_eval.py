"""The web UI's Evaluation page in a real headless Chromium: an admin lists the runs (one row per run
and configuration, leaks in red) and opens a run's report; a member neither sees the page nor reads
the endpoints. Runs are seeded through the Python API (``ws.evaluation``)."""
from __future__ import annotations

import json

from tests.server.conftest import ADMIN_PW, ALICE_PW

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import browser, configured, expect, login, no_horizontal_overflow, pages, site  # noqa: F401

HOSTILE = "<img src=x onerror=alert(1)> What is the hotel cap?"


def _seed(ws, tmp_path) -> tuple[dict, str]:
    """A real run of a small set under ``current``, and a stored run whose configuration leaked."""
    path = tmp_path / "hr-faq.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [
        {"question": "What is the hotel cost limit per night in Europe?", "answer": ["EUR 180"], "document": "hr/travel.md"},
        {"question": HOSTILE, "answer": ["180"], "document": "hr/travel.md"},
        {"question": "Who feeds the office cat?", "kind": "unanswerable"},
    ]) + "\n", encoding="utf-8")
    ws.evaluation.import_set("hr-faq", path, acl="everyone", asker="alice")
    run = ws.evaluation.run("hr-faq", trigger="test")
    runs = ws.evaluation.runs
    leaky = runs.start(run["set"]["id"], trigger="test", started_by="root")
    runs.add_config(leaky, "leaky", {"approach": "answer"}, "f" * 64,
                    {"items": 3, "contains": 1.0, "f1": 0.5, "leaks": 2, "latency_p95_ms": 1234.0}, [])
    runs.finish(leaky)
    return run, leaky


def test_admin_lists_runs_and_opens_a_report(site, pages, served, tmp_path):  # noqa: F811 - fixtures
    run, leaky = _seed(served.ws, tmp_path)
    [config] = run["configs"]
    admin = pages.new()
    login(admin, site, "root", ADMIN_PW)
    nav = admin.locator('#nav a[data-view="eval"]')
    expect(nav).to_have_text("Evaluation")
    nav.click()
    expect(admin.locator("#view-eval")).to_be_visible()

    row = admin.locator(f'#eval-runs tr[data-run="{run["run_id"]}"][data-config="current"]')
    expect(row).to_contain_text("hr-faq v1")
    expect(row).to_contain_text("completed")
    expect(row.locator(".eval-config")).to_have_text("current")
    expect(row.locator(".eval-f1")).to_have_text(f"{config['metrics']['f1']:.2f}")
    expect(row.locator(".eval-leaks")).to_have_text("0")
    expect(row.locator(".eval-leaks")).not_to_have_class("num eval-leaks leak")

    bad = admin.locator(f'#eval-runs tr[data-run="{leaky}"][data-config="leaky"]')
    expect(bad.locator(".eval-leaks")).to_have_text("2")
    expect(bad.locator(".eval-leaks")).to_have_class("num eval-leaks leak")
    assert bad.locator(".eval-leaks").evaluate("e => getComputedStyle(e).color") == "rgb(180, 35, 24)"  # --danger
    expect(bad.locator(".eval-groundedness")).to_have_text("—")  # a missing metric

    link = row.locator("a.eval-report")
    assert link.get_attribute("target") == "_blank" and link.get_attribute("rel") == "noopener"
    assert link.get_attribute("href") == f"/api/v1/eval/runs/{run['run_id']}/report"
    resp = admin.request.get(site + link.get_attribute("href"))  # the session cookie authenticates it
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in resp.headers.get("content-security-policy", "")
    with admin.expect_popup() as opened:
        link.click()
    report = opened.value
    problems = []
    report.on("console", lambda msg: problems.append(msg.text) if "Refused" in msg.text else None)
    report.on("pageerror", lambda exc: problems.append(str(exc)))
    expect(report.locator("h1")).to_have_text("Bastion evaluation")
    expect(report.locator("body")).to_contain_text("hr-faq")
    expect(report.locator("svg.chart").first).to_be_visible()
    expect(report.locator("body")).to_contain_text(HOSTILE)  # shown as text, never as markup
    expect(report.locator("img")).to_have_count(0)
    assert not problems, problems

    admin.set_viewport_size({"width": 390, "height": 800})  # on a phone the table scrolls, the page does not
    assert no_horizontal_overflow(admin)


def test_member_does_not_see_or_read_evaluations(site, pages, served, tmp_path):  # noqa: F811 - fixtures
    run, _ = _seed(served.ws, tmp_path)
    admin = pages.new()  # positive control: the same request as an admin succeeds
    login(admin, site, "root", ADMIN_PW)
    assert admin.request.get(f"{site}/api/v1/eval/runs").status == 200

    member = pages.new()
    login(member, site, "alice", ALICE_PW)
    expect(member.locator('#nav a[data-view="eval"]')).to_be_hidden()
    member.goto(f"{site}/#eval")
    expect(member.locator("#view-forbidden")).to_be_visible()
    expect(member.locator("#view-forbidden")).to_contain_text("You need the admin role")
    expect(member.locator("#eval-runs")).to_be_hidden()
    for path in ("/api/v1/eval/runs", f"/api/v1/eval/runs/{run['run_id']}/report"):
        status, ctype = member.evaluate("""async (p) => {
            const r = await fetch(p);
            return [r.status, r.headers.get('content-type')];
        }""", path)
        assert status == 403 and ctype == "application/problem+json", path
