"""``bastion search`` answered for the workspace's CLI (:mod:`bastion.core.cli_bridge`).

Not part of the API: no API key or session admits a request here, only the HMAC of the secret in
the workspace's bridge file, which the CLI reads from the workspace folder; a server that does not
advertise a bridge (:class:`~bastion.server.bridge.BridgedServer`) answers 401. The search runs as
the named user exactly as ``bastion search --as USER`` would in the CLI's own process, with the
same configuration (the request carries its digest), and, like it, writes no audit entry; a refused
request is audited as a failure, as any other.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import Field, ValidationError

from bastion.core import cli_bridge
from bastion.server.bridge import ServedBridge
from bastion.server.problems import Problem
from bastion.server.routes.common import Name, StrictBody

router = APIRouter(prefix="/api/v1/cli", include_in_schema=False)


class CliSearch(StrictBody):
    query: Annotated[str, Field(max_length=100_000)]
    user: Name
    k: int | None = Field(None, ge=1, le=1000)
    source: Name | None = None
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    config: Annotated[str, Field(max_length=64)]


@dataclass(frozen=True)
class BridgeCall:
    """A request signed with the advertised bridge's secret, answered once."""

    served: ServedBridge
    nonce: str
    body: bytes


async def require_cli_bridge(request: Request) -> BridgeCall:
    """The caller holds the workspace's bridge secret (401 otherwise, and on a server that does not
    advertise a bridge); this request's nonce is new."""
    served: ServedBridge | None = getattr(request.app.state, "cli_bridge", None)
    body = await request.body()
    if served is None:
        raise Problem(401, "unauthenticated", "this server answers no CLI (it was not started by `bastion serve`)")
    try:
        nonce = cli_bridge.verify_request(served.bridge.secret, request.headers.get(cli_bridge.REQUEST_HEADER), body)
    except cli_bridge.BridgeAuthError as exc:
        raise Problem(401, "unauthenticated", str(exc)) from None
    if not served.nonces.first_use(nonce):
        raise Problem(401, "unauthenticated", "this request was already answered")
    return BridgeCall(served, nonce, body)


@router.post("/search", response_model=None)
async def cli_search(request: Request, call: BridgeCall = Depends(require_cli_bridge)) -> Response:
    try:
        req = CliSearch.model_validate_json(call.body)
    except ValidationError as exc:
        raise Problem(422, "validation", f"invalid CLI search: {exc.error_count()} error(s)") from None
    if req.config != call.served.bridge.config:
        raise Problem(409, "conflict", "the CLI reads another configuration than this server runs")
    server = request.app.state.server
    ws = server.ws
    hits = await server.blocking(lambda: ws.search(req.query, ws.principal(req.user), req.k, source=req.source,
                                                   mode=req.mode))
    # every field at full precision (Hit.to_dict rounds the score): the CLI prints what it would have found
    payload = json.dumps({"hits": [asdict(h) for h in hits]}).encode()
    proof = cli_bridge.sign_response(call.served.bridge.secret, call.nonce, payload)
    return Response(payload, media_type="application/json", headers={cli_bridge.PROOF_HEADER: proof})
