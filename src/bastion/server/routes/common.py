"""What the routes share: strict request bodies, field types, and running audited work off the event loop.

Every route passes ``response_model=None``: its return annotation is for readers and type checkers,
and the OpenAPI spec documents no response schema.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bastion.server.auth import Ctx

T = TypeVar("T")
JsonObject = dict[str, Any]

Text = Annotated[str, Field(min_length=1, max_length=4000)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]


class StrictBody(BaseModel):
    """A request body that refuses fields it does not know (a typo is a 422, not ignored)."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class AuditEntry:
    """What a route's audit entry records beyond who called, how, and the route's action.

    Attributes:
        target: The entry's target, when it is not the request's (``ctx.target``).
        detail: Fields added to the entry's detail.
        lineage_id: The answer the request read.
        action: The action, when it is not the route's.
    """

    target: str | None = None
    detail: dict[str, Any] | None = None
    lineage_id: str | None = None
    action: str | None = None


async def blocking_audited(ctx: Ctx, work: Callable[[], T], *, target: str | None = None,
                           entry: AuditEntry | Callable[[T], AuditEntry] | None = None,
                           timeout: float | None = None) -> T:
    """Do ``work`` in a worker thread, then write the request's audit entry there; return what it returned.

    Args:
        ctx: The request's caller and audit entry.
        work: Blocking work (catalog, index, model). If it raises, nothing is recorded here: the error
            handler records the failure.
        target: The request's target, named before the work starts so that a failure's entry names it too.
        entry: What the entry records, or a function from ``work``'s result to it.
        timeout: Seconds the work may take (default: ``server.request_timeout_s``).

    Returns:
        ``work``'s result, once its audit entry is written (a request whose entry cannot be written fails).
    """

    def run() -> T:
        if target is not None:
            ctx.target = target
        result = work()
        fields = entry(result) if callable(entry) else entry or AuditEntry()
        ctx.audit(target=fields.target, detail=fields.detail, lineage_id=fields.lineage_id, action=fields.action)
        return result

    result: T = await ctx.server.blocking(run, timeout=timeout)
    return result
