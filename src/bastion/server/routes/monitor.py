"""Data health: alerts, each source's syncs, running the checks, and the HTML report."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam

from bastion.core.errors import BastionError
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, blocking_audited

router = APIRouter(prefix="/api/v1", tags=["admin"])
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; base-uri 'none'"


@router.get("/monitor", response_model=None, summary="Data health: unresolved alerts and each source's last sync")
async def monitor_status(ctx: Ctx = Depends(require("admin", "monitor.status")),
                         source: Annotated[str | None, Query(max_length=200)] = None,
                         include_resolved: bool = False) -> JsonObject:
    return await blocking_audited(ctx, lambda: _status(ctx, source, include_resolved))


def _status(ctx: Ctx, source: str | None, include_resolved: bool) -> JsonObject:
    try:
        data: JsonObject = ctx.server.ws.monitor.status(source, include_resolved)
    except BastionError as exc:
        raise Problem(404, "not-found", str(exc)) from None
    return data


@router.get("/monitor/sources/{name}/history", response_model=None,
            summary="A source's syncs and what each measured")
async def monitor_history(name: Annotated[str, PathParam(max_length=200)],
                          ctx: Ctx = Depends(require("admin", "monitor.history")),
                          limit: Annotated[int, Query(ge=1, le=1000)] = 30) -> JsonObject:
    return await blocking_audited(ctx, lambda: _history(ctx, name, limit), target=name)


def _history(ctx: Ctx, name: str, limit: int) -> JsonObject:
    try:
        runs = ctx.server.ws.monitor.history(name, limit)
    except BastionError as exc:
        raise Problem(404, "not-found", str(exc)) from None
    return {"source": name, "runs": runs}


@router.post("/monitor/alerts/{alert_id}/{action}", response_model=None,
             summary="Acknowledge or resolve an alert (resolving a schema alert accepts the new columns)")
async def monitor_alert(alert_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)], action: Literal["acknowledge", "resolve"],
                        ctx: Ctx = Depends(require("admin", "alert.change"))) -> JsonObject:
    return await blocking_audited(
        ctx, lambda: _change_alert(ctx, alert_id, action), target=str(alert_id),
        entry=lambda alert: AuditEntry(action=f"alert.{action}",
                                       detail={"source": alert["source"], "kind": alert["kind"]}))


def _change_alert(ctx: Ctx, alert_id: int, action: str) -> dict[str, Any]:
    monitor, user_id = ctx.server.ws.monitor, ctx.identity.user_id
    change = monitor.acknowledge if action == "acknowledge" else monitor.resolve
    try:
        alert: dict[str, Any] = change(alert_id, user_id)
    except BastionError as exc:
        status = 404 if "no alert" in str(exc) else 409
        raise Problem(status, "not-found" if status == 404 else "conflict", str(exc)) from None
    return alert


@router.post("/monitor/run", response_model=None,
             summary="Evaluate every source's checks now (freshness moves with the clock)")
async def monitor_run(ctx: Ctx = Depends(require("admin", "monitor.run"))) -> JsonObject:
    """The checks run now; pinned question sets that are due start in the background (their
    drops open ``answer_quality`` alerts when they finish)."""
    return await blocking_audited(ctx, lambda: _run_checks(ctx))


def _run_checks(ctx: Ctx) -> JsonObject:
    import threading

    ws = ctx.server.ws
    ws.monitor.run()
    ws.check_adapters()
    alerts = ws.monitor.alerts()
    reg = ws.evaluation.regression
    due = [p["set"] for p in reg.pins() if reg.why_due(p) is not None]
    if due:
        threading.Thread(target=reg.run_due, kwargs={"only": due}, name="bastion-eval-pinned", daemon=True).start()
    return {"alerts": alerts, "evaluations_started": due}


@router.get("/monitor/report", summary="The data-health report: one self-contained HTML page",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def monitor_report(ctx: Ctx = Depends(require("admin", "monitor.report"))) -> Response:
    from bastion.monitoring.report import build_report

    ws = ctx.server.ws
    html = await blocking_audited(
        ctx, lambda: build_report(ws.monitor, [s.name for s in ws.sources.list()], ws.home.name))
    return Response(html, media_type="text/html; charset=utf-8", headers={"content-security-policy": REPORT_CSP})
