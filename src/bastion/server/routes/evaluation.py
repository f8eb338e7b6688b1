"""Evaluation (admin): question sets, configurations, runs and their reports, comparison, promotion,
pinned regression sets and feedback candidates.

A question set quotes the documents it was built from, so its questions, answers and per-item
results are shown only to an admin who may read every one of those documents; the set's name,
size and a run's metrics are shown to every admin.
"""
from __future__ import annotations

import queue
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as PathParam
from pydantic import Field

from bastion.core.errors import ConfigError
from bastion.evaluation.items import EvalItem
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, StrictBody, blocking_audited
from bastion.server.routes.monitor import REPORT_CSP

router = APIRouter(prefix="/api/v1/eval", tags=["evaluation"])
RunId = Annotated[str, PathParam(min_length=32, max_length=32, pattern="^[0-9a-f]{32}$")]
SetRef = Annotated[str, PathParam(min_length=1, max_length=220)]
HIDDEN = "this set quotes documents you may not read"
PROMOTE_TIMEOUT_S = 3600.0  # promotion runs the set twice before it answers


class ItemBody(StrictBody):
    question: Annotated[str, Field(min_length=1, max_length=4000)]
    answer: str | list[Annotated[str, Field(max_length=4000)]] | None = None
    document: Annotated[str, Field(max_length=1000)] | None = None
    sentence: Annotated[str, Field(max_length=4000)] | None = None
    asker: Annotated[str, Field(max_length=200)] | None = None
    kind: Literal["answerable", "unanswerable", "forbidden"] = "answerable"


class SetBody(StrictBody):
    items: Annotated[list[ItemBody], Field(min_length=1, max_length=5000)]
    acl: Annotated[str, Field(max_length=2000)] | None = None
    asker: Name | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None


class ConfigBody(StrictBody):
    model: Name | None = None
    approach: Literal["extract", "answer", "prompt-only"] | None = None
    search_mode: Literal["hybrid", "dense", "bm25"] | None = None
    k: Annotated[int, Field(ge=1, le=50)] | None = None
    max_passages: Annotated[int, Field(ge=1, le=20)] | None = None
    prompt: Name | None = None
    min_evidence: Annotated[float, Field(ge=-1, le=2)] | None = None
    adapter: Name | None = None


class RunBody(StrictBody):
    set: Annotated[str, Field(min_length=1, max_length=220)]
    configs: Annotated[list[Name], Field(max_length=10)] = []
    mode: Literal["extract", "answer", "prompt-only"] | None = None
    asker: Name | None = None
    repeat: Annotated[int, Field(ge=0, le=10_000)] = 10
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = None


class PromoteBody(StrictBody):
    config: Name
    set: Annotated[str, Field(min_length=1, max_length=220)]
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.02
    metrics: Annotated[list[Name], Field(max_length=20)] | None = None
    force: bool = False


class PinBody(StrictBody):
    config: Name = "current"
    metrics: Annotated[list[Name], Field(max_length=20)] | None = None
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.05
    every: Annotated[str, Field(max_length=40)] | None = None
    sync_change: Annotated[float, Field(gt=0, le=1)] = 0.2
    baseline_run_id: Annotated[str, Field(min_length=32, max_length=32)] | None = None


class CandidatesBody(StrictBody):
    feedback_ids: Annotated[list[Annotated[int, Field(ge=1, le=2**31 - 1)]], Field(min_length=1, max_length=1000)]
    set: Name | None = None


def _readable_set(ctx: Ctx, ref: str) -> Any:
    """The set, if the caller may read every document it quotes (else 403)."""
    s = ctx.server.ws.evaluation.sets.get(ref)
    if not s.readable_by(ctx.principal):
        raise Problem(403, "forbidden", HIDDEN)
    return s


def _run_readable(ctx: Ctx, run_id: str) -> None:
    ev = ctx.server.ws.evaluation
    s = ev.sets.by_id(ev.runs.set_id(run_id))
    if not s.readable_by(ctx.principal):
        raise Problem(403, "forbidden", HIDDEN)


# -- sets ------------------------------------------------------------------------------------
@router.get("/sets", response_model=None, summary="Question sets (latest versions) and who may read them")
async def list_sets(ctx: Ctx = Depends(require("admin", "eval.sets"))) -> JsonObject:
    def work() -> JsonObject:
        ev = ctx.server.ws.evaluation
        return {"sets": [s.to_dict() | {"readable": s.readable_by(ctx.principal)} for s in ev.sets.listing()]}
    return await blocking_audited(ctx, work)


@router.put("/sets/{name}", response_model=None, status_code=201,
            summary="Import questions as the next version of a set (all of them or none)")
async def import_set(name: Annotated[str, PathParam(min_length=1, max_length=200)], body: SetBody,
                     ctx: Ctx = Depends(require("admin", "eval.set.import"))) -> JsonObject:
    def work() -> JsonObject:
        from bastion.evaluation.sets import item_from_row

        items: list[EvalItem] = []
        errors = []
        for n, it in enumerate(body.items, 1):
            try:
                items.append(item_from_row(it.model_dump(exclude_none=True)))
            except ConfigError as exc:
                errors.append(f"item {n}: {exc}")
        if errors:
            raise ConfigError("; ".join(errors[:20]) + "; nothing was imported")
        ev = ctx.server.ws.evaluation
        return ev.import_items(name, items, acl=body.acl, asker=body.asker, description=body.description,
                               created_by=ctx.identity.user_id).to_dict()
    return await blocking_audited(ctx, work, target=name,
                                  entry=lambda r: AuditEntry(detail={"items": r["set"]["items"], "version": r["set"]["version"]}))


@router.get("/sets/{ref}", response_model=None, summary="A set's questions (if you may read what it quotes)")
async def get_set(ref: SetRef, ctx: Ctx = Depends(require("admin", "eval.set.read"))) -> JsonObject:
    def work() -> JsonObject:
        s = _readable_set(ctx, ref)
        return {"set": s.to_dict(), "items": [i.to_dict() for i in ctx.server.ws.evaluation.sets.items(s)]}
    return await blocking_audited(ctx, work, target=ref)


# -- configurations ----------------------------------------------------------------------------
@router.get("/configs", response_model=None, summary="Evaluation configurations, resolved against the workspace")
async def list_configs(ctx: Ctx = Depends(require("admin", "eval.configs"))) -> JsonObject:
    ws = ctx.server.ws
    return await blocking_audited(ctx, lambda: {"configs": {n: s.resolve(ws.config).to_dict()
                                                            for n, s in ws.evaluation.configs.all().items()}})


@router.put("/configs/{name}", response_model=None, summary="Store a named configuration")
async def put_config(name: Annotated[str, PathParam(min_length=1, max_length=200)], body: ConfigBody,
                     ctx: Ctx = Depends(require("admin", "eval.config.put"))) -> JsonObject:
    def work() -> JsonObject:
        from bastion.evaluation.configs import parse_spec

        ws = ctx.server.ws
        spec = parse_spec(body.model_dump(exclude_none=True))
        if spec.model and not ws.models.exists(spec.model):
            raise ConfigError(f"no model named {spec.model!r} in this workspace (register it with `bastion model add` or `bastion model pull`)")
        ws.evaluation.configs.put(name, spec, created_by=ctx.identity.user_id)
        return {"name": name, "spec": spec.to_dict()}
    return await blocking_audited(ctx, work, target=name)


# -- runs ------------------------------------------------------------------------------------
@router.post("/runs", response_model=None, status_code=202,
             summary="Start a run of a set under configurations; poll GET /runs/{run_id} until it is completed")
async def start_run(body: RunBody, ctx: Ctx = Depends(require("admin", "eval.run"))) -> JsonObject:
    def work() -> JsonObject:
        _readable_set(ctx, body.set)
        started: queue.Queue[str | BaseException] = queue.Queue()

        def background() -> None:
            try:
                ctx.server.ws.evaluation.run(body.set, body.configs, mode=body.mode, asker=body.asker,
                                             repeat=body.repeat, limit=body.limit, trigger="api",
                                             started_by=ctx.identity.user_id, on_start=started.put)
            except BaseException as exc:  # noqa: BLE001 - handed to the request (before start) or kept in the run
                started.put(exc)

        threading.Thread(target=background, name="bastion-eval-run", daemon=True).start()
        first = started.get()
        if isinstance(first, BaseException):
            raise first
        return {"run_id": first, "status": "running"}
    return await blocking_audited(ctx, work, target=body.set,
                                  entry=lambda r: AuditEntry(detail={"run_id": r["run_id"], "configs": body.configs or ["current"]}))


@router.get("/runs", response_model=None, summary="Evaluation runs, newest first, with their metrics")
async def list_runs(ctx: Ctx = Depends(require("admin", "eval.runs")),
                    limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> JsonObject:
    return await blocking_audited(ctx, lambda: {"runs": ctx.server.ws.evaluation.runs.recent(limit=limit)})


@router.get("/runs/{run_id}", response_model=None, summary="One run: metrics, and every item if you may read the set")
async def get_run(run_id: RunId, ctx: Ctx = Depends(require("admin", "eval.run.read"))) -> JsonObject:
    def work() -> JsonObject:
        ev = ctx.server.ws.evaluation
        s = ev.sets.by_id(ev.runs.set_id(run_id))
        data: JsonObject = ev.runs.get(run_id, items=s.readable_by(ctx.principal))
        data["items_hidden"] = not s.readable_by(ctx.principal)
        return data
    return await blocking_audited(ctx, work, target=run_id)


@router.get("/runs/{run_id}/report", summary="A run's report: one self-contained HTML page",
            response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def run_report(run_id: RunId, ctx: Ctx = Depends(require("admin", "eval.report"))) -> Response:
    def work() -> str:
        _run_readable(ctx, run_id)
        return ctx.server.ws.evaluation.report([run_id])
    html = await blocking_audited(ctx, work, target=run_id)
    return Response(html, media_type="text/html; charset=utf-8", headers={"content-security-policy": REPORT_CSP})


@router.get("/compare", response_model=None, summary="Two runs on their shared items: differences, intervals, paired tests")
async def compare(ctx: Ctx = Depends(require("admin", "eval.compare")),
                  a: Annotated[str, Query(min_length=32, max_length=32)] = "",
                  b: Annotated[str, Query(min_length=32, max_length=32)] = "",
                  config_a: Annotated[str | None, Query(max_length=200)] = None,
                  config_b: Annotated[str | None, Query(max_length=200)] = None) -> JsonObject:
    return await blocking_audited(ctx, lambda: ctx.server.ws.evaluation.compare(a, b, config_a=config_a, config_b=config_b))


@router.post("/promote", response_model=None,
             summary="Make a configuration the default if a fresh run shows it is not worse than current")
async def promote(body: PromoteBody, ctx: Ctx = Depends(require("admin", "eval.promote"))) -> JsonObject:
    from bastion.evaluation.regression import PINNED_DEFAULT

    def work() -> JsonObject:
        _readable_set(ctx, body.set)
        decision: JsonObject = ctx.server.ws.evaluation.regression.promote(
            body.config, body.set, tolerance=body.tolerance, metrics=body.metrics or PINNED_DEFAULT, force=body.force,
            by=ctx.identity.user_id)
        if not decision["promoted"]:
            ctx.audit("denied", detail={"run_id": decision["run_id"], "regressions": decision["regressions"]})
            raise Problem(409, "conflict", f"{body.config} is worse than current beyond tolerance {body.tolerance}; "
                                           "nothing was changed", extra={"decision": decision})
        return decision
    return await blocking_audited(ctx, work, target=body.config, timeout=PROMOTE_TIMEOUT_S,
                                  entry=lambda d: AuditEntry(detail={"run_id": d["run_id"], "forced": d["forced"],
                                                                     "changed": d.get("changed")}))


# -- pinned sets -----------------------------------------------------------------------------
@router.get("/pins", response_model=None, summary="Pinned regression sets")
async def pins(ctx: Ctx = Depends(require("admin", "eval.pins"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: {"pins": ctx.server.ws.evaluation.regression.pins()})


@router.put("/pins/{name}", response_model=None, summary="Pin a set as a regression set")
async def pin(name: Annotated[str, PathParam(min_length=1, max_length=200)], body: PinBody,
              ctx: Ctx = Depends(require("admin", "eval.pin"))) -> JsonObject:
    from bastion.evaluation.regression import PINNED_DEFAULT

    def work() -> JsonObject:
        _readable_set(ctx, name)
        return ctx.server.ws.evaluation.regression.pin(
            name, config=body.config, metrics=body.metrics or PINNED_DEFAULT, tolerance=body.tolerance, every=body.every,
            sync_change=body.sync_change, baseline_run_id=body.baseline_run_id, by=ctx.identity.user_id)
    return await blocking_audited(ctx, work, target=name)


@router.delete("/pins/{name}", response_model=None, summary="Unpin a regression set")
async def unpin(name: Annotated[str, PathParam(min_length=1, max_length=200)],
                ctx: Ctx = Depends(require("admin", "eval.unpin"))) -> JsonObject:
    def work() -> JsonObject:
        ctx.server.ws.evaluation.regression.unpin(name)
        return {"set": name, "pinned": False}
    return await blocking_audited(ctx, work, target=name)


# -- feedback candidates ---------------------------------------------------------------------------
@router.get("/candidates", response_model=None, summary="Rated answers not yet accepted into a set or rejected")
async def candidates(ctx: Ctx = Depends(require("admin", "eval.candidates")),
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JsonObject:
    def work() -> JsonObject:
        found = ctx.server.ws.evaluation.candidates(limit)
        docs = ctx.server.ws.evaluation.sets
        mine = [c for c in found if all(ctx.principal.can_read(a) for a in docs.documents_acl(c["documents"])[0])]
        return {"candidates": mine, "hidden": len(found) - len(mine)}
    return await blocking_audited(ctx, work)


@router.post("/candidates/{action}", response_model=None, summary="Accept rated answers into a set, or reject them")
async def decide(action: Literal["accept", "reject"], body: CandidatesBody,
                 ctx: Ctx = Depends(require("admin", "eval.candidates.decide"))) -> JsonObject:
    def work() -> JsonObject:
        ev = ctx.server.ws.evaluation
        if action == "reject":
            ev.reject(body.feedback_ids, by=ctx.identity.user_id)
            return {"rejected": body.feedback_ids}
        if not body.set:
            raise ConfigError("accepting candidates needs a set name ('set')")
        return {"set": ev.accept(body.feedback_ids, body.set, by=ctx.identity.user_id).to_dict()}
    return await blocking_audited(ctx, work, target=body.set, entry=AuditEntry(action=f"eval.candidates.{action}",
                                                                              detail={"feedback_ids": body.feedback_ids}))
