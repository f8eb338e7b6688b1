"""Fine-tuning (admin): datasets and adapters, promotion, rollback, and returning a withdrawn
adapter to service. Building a dataset and training run from the CLI (`bastion tune`), where
they can take their time and show progress."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import Field

from bastion.core.errors import ModelError
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.common import AuditEntry, JsonObject, Name, StrictBody, blocking_audited

router = APIRouter(prefix="/api/v1/tune", tags=["tuning"])
AdapterName = Annotated[str, PathParam(min_length=1, max_length=200)]
PROMOTE_TIMEOUT_S = 3600.0  # an adapter never evaluated is evaluated first


class PromoteBody(StrictBody):
    tolerance: Annotated[float, Field(ge=0, le=1)] = 0.02
    force: bool = False


class RollbackBody(StrictBody):
    adapter: Name | None = None


def _known(work: Any) -> Any:
    """Run ``work``; an unknown adapter is a 404."""
    try:
        return work()
    except ModelError as exc:
        raise Problem(404, "not-found", str(exc)) from None


@router.get("/datasets", response_model=None, summary="Training datasets: audience, counts, cleaning report")
async def datasets(ctx: Ctx = Depends(require("admin", "tune.datasets"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: {"datasets": [c.to_dict() for c in ctx.server.ws.tuning.datasets.list()]})


@router.get("/adapters", response_model=None, summary="Adapters: audience, status, training and evaluation")
async def adapters(ctx: Ctx = Depends(require("admin", "tune.adapters"))) -> JsonObject:
    return await blocking_audited(ctx, lambda: {"adapters": [a.to_dict() for a in ctx.server.ws.adapters.all()]})


@router.post("/adapters/{name}/promote", response_model=None,
             summary="Serve the adapter to its audience if it beats the base model and forgets nothing (409 otherwise)")
async def promote(name: AdapterName, body: PromoteBody, ctx: Ctx = Depends(require("admin", "tune.promote"))) -> JsonObject:
    def work() -> JsonObject:
        decision: JsonObject = _known(lambda: ctx.server.ws.tuning.promote(
            name, tolerance=body.tolerance, force=body.force, by=ctx.identity.user_id))
        if not decision["promoted"]:
            ctx.audit("denied", detail={"reasons": decision["reasons"]})
            raise Problem(409, "conflict", f"{name} was not promoted: " + "; ".join(decision["reasons"]),
                          extra={"decision": decision})
        return decision
    return await blocking_audited(ctx, work, target=name, timeout=PROMOTE_TIMEOUT_S,
                                  entry=lambda d: AuditEntry(detail={"forced": d["forced"], "replaced": d.get("replaced")}))


@router.post("/rollback", response_model=None, summary="Retire the active adapter and restore the one it replaced")
async def rollback(body: RollbackBody, ctx: Ctx = Depends(require("admin", "tune.rollback"))) -> JsonObject:
    def work() -> JsonObject:
        result: JsonObject = ctx.server.ws.adapters.rollback(body.adapter, by=ctx.identity.user_id)
        return result
    return await blocking_audited(ctx, work, target=body.adapter, entry=lambda r: AuditEntry(target=r["retired"], detail=r))


@router.post("/adapters/{name}/accept", response_model=None, summary="Return a withdrawn adapter to service")
async def accept(name: AdapterName, ctx: Ctx = Depends(require("admin", "tune.accept"))) -> JsonObject:
    def work() -> JsonObject:
        adapter = _known(lambda: ctx.server.ws.adapters.accept(name, by=ctx.identity.user_id))
        data: JsonObject = adapter.to_dict()
        return data
    return await blocking_audited(ctx, work, target=name)
