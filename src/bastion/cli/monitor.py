"""``bastion monitor …``: data-observability status, history, checks, alerts and the HTML report."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled

app = typer.Typer(name="monitor", help="Data health of every source: checks, alerts, report.", no_args_is_help=True)
STYLE = {"hard": "bold red", "warn": "yellow"}


def print_alerts(alerts: list[dict], empty: str = "no open alerts") -> None:
    """One heading line per alert, its message indented below (reads well in a narrow terminal)."""
    if not alerts:
        console.print(styled((empty, "green")))
        return
    for a in alerts:
        def when(ts: str | None) -> str:
            return (ts or "").replace("T", " ")[:16]
        status = a["status"]
        if a.get("acknowledged_by") and status == "acknowledged":
            status += f" by {a['acknowledged_by']}"
        if status == "resolved":
            status += f" {when(a['resolved_at'])}" + (f" by {a['resolved_by']}" if a.get("resolved_by") else " (check passed)")
        console.print(styled((a["severity"].upper(), STYLE.get(a["severity"], "")), f" #{a['id']} {a['source']} · "
                             f"{a['kind']} · opened {when(a['opened_at'])} · {status}"))
        console.print(styled(f"    {a['message']}"), soft_wrap=True)


@app.command("status")
def status(source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
           all_: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
           as_json: JsonOpt = False) -> None:
    """Unresolved alerts (open or acknowledged) and each source's last sync."""
    with friendly_errors():
        data = open_ws().monitor.status(source, all_)
    if as_json:
        emit_json(data)
        return
    table = Table("source", "last sync", "when", "live documents", "alerts")
    for s in data["sources"]:
        last = s["last_run"] or {}
        table.add_row(s["name"], last.get("status") or "never", (last.get("finished_at") or "")[:16],
                      str(s["documents"] if s["documents"] is not None else "-"), str(s["open_alerts"]))
    console.print(table)
    print_alerts(data["alerts"])
    if data["undelivered_webhooks"]:
        console.print(styled((f"{data['undelivered_webhooks']} webhook deliveries pending (retried by `bastion monitor run`)",
                              "yellow")))


@app.command("run")
def run(as_json: JsonOpt = False) -> None:
    """Evaluate every source's checks now (e.g. from cron: freshness moves with the clock), run the pinned
    question sets that are due, send webhooks."""
    from bastion.cli.evaluation import print_regression_results

    with friendly_errors():
        ws = open_ws()
        ws.monitor.run()
        ws.check_adapters()
        evaluations = ws.evaluation.regression.run_due()
        alerts = ws.monitor.alerts()
        if ws.monitor.notifier is not None:
            ws.monitor.notifier.wait(60)
    if as_json:
        emit_json({"alerts": alerts, "evaluations": evaluations})
        return
    print_regression_results(evaluations)
    print_alerts(alerts)


@app.command("history")
def history(source: str, limit: Annotated[int, typer.Option(min=1, max=10000)] = 20, as_json: JsonOpt = False) -> None:
    """A source's syncs, newest first, with what each measured."""
    with friendly_errors():
        runs = open_ws().monitor.history(source, limit)
    if as_json:
        emit_json({"source": source, "runs": runs})
        return
    table = Table("run", "status", "started", "docs", "chunks", "+new", "-gone", "fail", "garbled", "empty", "dupes",
                  box=None, pad_edge=False)
    for col in table.columns[:3]:
        col.no_wrap = True
    for r in runs:
        m, c = r["metrics"], r["counts"]
        st, d = m.get("state") or {}, m.get("delta") or {}

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.0f}%"
        table.add_row(str(r["run_id"]), r["status"], r["started_at"][5:16].replace("T", "_"),
                      str(st.get("documents", "-")), str(st.get("chunks", "-")), str(c.get("documents_added", "-")),
                      str(d.get("removed", "-")), pct(st.get("failed_ratio")), pct(st.get("garbled_ratio")),
                      pct(st.get("empty_ratio")), pct(d.get("duplicate_ratio")))
    console.print(table)


def _transition(alert_id: int, to: str, as_json: bool) -> None:
    import getpass

    with friendly_errors():
        ws = open_ws()
        actor = f"cli:{getpass.getuser()}"
        a = ws.monitor.acknowledge(alert_id, actor) if to == "ack" else ws.monitor.resolve(alert_id, actor)
        cli_audit(ws, f"alert.{'acknowledge' if to == 'ack' else 'resolve'}", str(alert_id), {"source": a["source"]})
        if ws.monitor.notifier is not None:
            ws.monitor.notifier.wait(30)
    if as_json:
        emit_json(a)
    else:
        console.print(styled(f"alert {a['id']} ({a['source']}, {a['kind']}) is now ", (a["status"], "bold")))


AlertId = Annotated[int, typer.Argument(min=1, max=2**62, help="The alert's id.")]


@app.command("ack")
def ack(alert_id: AlertId, as_json: JsonOpt = False) -> None:
    """Acknowledge an alert: someone is on it (it stays unresolved, answers still warn)."""
    _transition(alert_id, "ack", as_json)


@app.command("resolve")
def resolve(alert_id: AlertId, as_json: JsonOpt = False) -> None:
    """Resolve an alert by hand; for a schema change this accepts the new columns."""
    _transition(alert_id, "resolve", as_json)


@app.command("report")
def report(out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML page.")] = Path("bastion-report.html"),
           as_json: JsonOpt = False) -> None:
    """Write a self-contained HTML page: per-source time series, open alerts, schema changes."""
    from bastion.monitoring.report import build_report

    with friendly_errors():
        ws = open_ws()
        html = build_report(ws.monitor, [s.name for s in ws.sources.list()], ws.home.name)
    out.write_text(html, encoding="utf-8")
    if as_json:
        emit_json({"path": str(out.resolve()), "bytes": len(html.encode())})
    else:
        console.print(styled(f"wrote {out.resolve()}"))
