"""``/scim/v2``: SCIM 2.0 provisioning of users and groups (RFC 7644), for identity providers.

One bearer token, read from the environment variable ``[scim] token_env`` names, authenticates
the identity provider; it opens these endpoints and nothing else (API keys are not accepted
here). Every request is audited as actor ``scim``. Answers and errors are
``application/scim+json``; the protocol logic is :mod:`bastion.identity.scim`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from bastion.core.errors import AccessError
from bastion.identity import scim
from bastion.identity.scim import (
    Context,
    NotFoundException,
    Resource,
    SCIMException,
    SearchRequest,
)
from bastion.server.auth import client_ip, request_scheme
from bastion.server.problems import INTERNAL_DETAIL

if TYPE_CHECKING:
    from bastion.server.app import BastionServer

log = logging.getLogger("bastion.server.scim")
router = APIRouter(prefix="/scim/v2", include_in_schema=False)
SCIM_JSON = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
KINDS: dict[str, type[Resource[Any]]] = {"Users": scim.User, "Groups": scim.Group}
DISCOVERY = ("ServiceProviderConfig", "ResourceTypes", "Schemas")


class Refusal(Exception):
    """A request answered with a SCIM error before it reached the directory."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.scim_type, self.headers = status, detail, scim_type, headers


def error(status: int, detail: str, scim_type: str | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return JSONResponse(body, status_code=status, media_type=SCIM_JSON, headers=headers)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class Call:
    """One SCIM request: authenticated, read, carried out in a worker thread, audited."""

    def __init__(self, request: Request, action: str) -> None:
        self.request, self.action = request, action
        self.server: BastionServer = request.app.state.server
        self.cfg = self.server.ws.config.scim
        self.payload: Any = None

    def _audit(self, outcome: str, target: str | None, detail: dict) -> None:
        req = self.request
        self.server.audit.record(actor="scim", via="scim", action=self.action, outcome=outcome, target=target,
                                 ip=client_ip(req, self.server.ws.config.server.trusted_proxies),
                                 request_id=getattr(req.state, "request_id", None), detail=detail)

    def _authenticate(self) -> None:
        if not self.cfg.enabled:
            raise Refusal(404, "SCIM provisioning is off: set [scim] enabled = true in bastion.toml")
        secret = os.environ.get(self.cfg.token_env, "")
        if len(secret) < 32:
            raise Refusal(503, f"SCIM is enabled but the environment variable {self.cfg.token_env} holds no token "
                               "of at least 32 characters; set it and restart the server")
        scheme, _, token = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(token.strip()), _digest(secret)):
            self._audit("denied", self.request.url.path, {"reason": "wrong or missing SCIM bearer token"})
            raise Refusal(401, "send the SCIM token: 'Authorization: Bearer <token>' (API keys are not accepted "
                               "on /scim/v2)", headers={"WWW-Authenticate": 'Bearer realm="scim"'})

    async def body(self) -> Any:
        raw = await self.request.body()
        limit = min(self.cfg.max_body_kb, self.server.ws.config.server.max_request_kb) * 1024
        if len(raw) > limit:
            raise Refusal(413, f"request body of {len(raw)} bytes is over the SCIM limit of {limit} bytes "
                               "([scim] max_body_kb); send fewer members per request")
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refusal(400, f"the request body is not valid JSON: {exc}", "invalidSyntax") from None

    def directory(self) -> scim.ScimDirectory:
        req = self.request
        scheme = request_scheme(req, self.server.ws.config.server.trusted_proxies)
        base = f"{scheme}://{req.url.netloc}{req.scope.get('root_path', '')}{router.prefix}"
        return scim.ScimDirectory(self.server.ws.directory, self.cfg, base)

    async def run(self, work: Callable[[scim.ScimDirectory], Response], *, read_body: bool = False,
                  target: str | None = None) -> Response:
        """Authenticate, read the body (``read_body``: into :attr:`payload`), then run ``work`` (blocking)
        and audit what it did; errors become SCIM errors."""
        try:
            await self.server.blocking(self._authenticate)
            if read_body:
                self.payload = await self.body()
        except Refusal as r:
            if r.status != 401:  # a refused credential was audited already
                await self.server.blocking(self._audit, "failed", target, {"status": r.status, "error": r.detail})
            return error(r.status, r.detail, r.scim_type, r.headers)
        directory = self.directory()

        def carry_out() -> Response:
            try:
                response = work(directory)
            except SCIMException as exc:
                self._audit("denied" if exc.status == 404 else "failed", target,
                            {"status": exc.status, "error": exc.detail})
                return error(exc.status, exc.detail, exc.scim_type or None)
            except AccessError as exc:  # a rule of the directory (a name it cannot hold)
                self._audit("failed", target, {"status": 400, "error": str(exc)})
                return error(400, str(exc), "invalidValue")
            except Exception:
                log.exception("SCIM %s failed", self.action)
                self._audit("error", target, {"status": 500})
                return error(500, INTERNAL_DETAIL)
            change = response.change if isinstance(response, _Answer | _Done) else None
            if change is not None and change.action:
                self._audit("ok", change.target, change.detail)
            else:
                self._audit("ok", target, change.detail if change is not None else {})
            return response

        return await self.server.blocking(carry_out)


class _Answer(JSONResponse):
    change: scim.Change | None = None


class _Done(Response):
    change: scim.Change | None = None


def answer(body: Any, status: int = 200, *, resource: Resource[Any] | None = None,
           change: scim.Change | None = None, detail: dict[str, Any] | None = None) -> _Answer:
    headers = {}
    if resource is not None and resource.meta is not None:
        headers["ETag"] = str(resource.meta.version)
        if status == 201:
            headers["Location"] = str(resource.meta.location)
    response = _Answer(body, status_code=status, media_type=SCIM_JSON, headers=headers)
    response.change = change or (scim.Change("", "", detail) if detail else None)
    return response


def _dump(resource: Resource[Any], ctx: Context, params: SearchRequest | None = None) -> dict[str, Any]:
    return resource.model_dump(scim_ctx=ctx, response_parameters=params)


def _params(request: Request, model: type[Resource[Any]] | None) -> SearchRequest:
    """``filter``, ``startIndex``, ``count``, ``attributes``, ``excludedAttributes`` of a GET (sortBy: ignored)."""
    q = request.query_params
    data: dict[str, Any] = {}
    for name in ("filter", "startIndex", "count"):
        if name in q:
            data[name] = q[name]
    for name in ("attributes", "excludedAttributes"):
        if q.get(name):
            data[name] = [a.strip() for a in q[name].split(",") if a.strip()]
    return _search_request(data, model)


def _search_request(data: Any, model: type[Resource[Any]] | None) -> SearchRequest:
    if not isinstance(data, dict):
        raise scim.InvalidSyntaxError(detail="the request body must be a JSON object")
    data = {k: v for k, v in data.items() if k.lower() not in ("sortby", "sortorder")}  # sorting: not supported
    try:
        parsed = SearchRequest[model] if model is not None else SearchRequest  # type: ignore[valid-type]
        return parsed.model_validate(data, scim_ctx=Context.SEARCH_REQUEST, scim_policy=scim.POLICY)
    except ValueError as exc:  # pydantic's ValidationError is one
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            raise scim._validation_error(exc) from None
        raise


# -- discovery ---------------------------------------------------------------------------------
def _listed(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [LIST_SCHEMA], "totalResults": len(items), "startIndex": 1, "itemsPerPage": len(items),
            "Resources": items}


def _discovery(d: scim.ScimDirectory, kind: str) -> list[dict[str, Any]]:
    ctx = Context.RESOURCE_QUERY_RESPONSE
    if kind == "Schemas":
        out = []
        for s in scim.schemas():
            body = s.model_dump(scim_ctx=ctx)
            body["meta"] = {"resourceType": "Schema", "location": f"{d.base}/Schemas/{s.id}"}
            out.append(body)
        return out
    out = []
    for t in scim.resource_types():
        body = t.model_dump(scim_ctx=ctx)
        body["meta"] = {"resourceType": "ResourceType", "location": f"{d.base}/ResourceTypes/{t.id}"}
        out.append(body)
    return out


@router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request) -> Response:
    def work(d: scim.ScimDirectory) -> Response:
        cfg = scim.service_provider_config(d.config.max_results).model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
        cfg["meta"] = {"resourceType": "ServiceProviderConfig", "location": f"{d.base}/ServiceProviderConfig"}
        return answer(cfg)

    return await Call(request, "scim.discovery").run(work)


@router.get("/{kind}")
async def list_discovery_or_resources(request: Request, kind: str) -> Response:
    if kind in KINDS:
        return await _list(request, kind)
    if kind not in DISCOVERY[1:]:
        return await _unknown(request)
    return await Call(request, "scim.discovery").run(lambda d: answer(_listed(_discovery(d, kind))))


@router.get("/{kind}/{ident}")
async def get_one(request: Request, kind: str, ident: str) -> Response:
    if kind in DISCOVERY[1:]:
        def find(d: scim.ScimDirectory) -> Response:
            for body in _discovery(d, kind):
                if body["id"] == ident:
                    return answer(body)
            raise NotFoundException(detail=f"no {kind[:-1]} with id {ident!r}")

        return await Call(request, "scim.discovery").run(find)
    if kind not in KINDS:
        return await _unknown(request)

    def work(d: scim.ScimDirectory) -> Response:
        params = _params(request, KINDS[kind])
        found = d.get_user(ident) if kind == "Users" else d.get_group(ident)
        return answer(_dump(found, Context.RESOURCE_QUERY_RESPONSE, params), resource=found)

    return await Call(request, f"scim.{kind.lower()}.get").run(work, target=ident)


# -- lists -------------------------------------------------------------------------------------
async def _list(request: Request, kind: str, *, search: bool = False) -> Response:
    """A list of ``kind`` (``""``: users and groups), from a GET's query or a ``.search`` body."""
    call = Call(request, f"scim.{kind.lower() or 'all'}.{'search' if search else 'list'}")

    def work(d: scim.ScimDirectory) -> Response:
        model = KINDS.get(kind)
        params = _search_request(call.payload, model) if search else _params(request, model)
        flt = str(params.filter) if params.filter else None
        found: list[Any] = (d.users(flt) if kind in ("Users", "") else []) + (d.groups(flt) if kind != "Users" else [])
        start = max(params.start_index or 1, 1)
        count = d.config.max_results if params.count is None else min(max(params.count, 0), d.config.max_results)
        page = found[start - 1:start - 1 + count]
        return answer({"schemas": [LIST_SCHEMA], "totalResults": len(found), "startIndex": start,
                       "itemsPerPage": len(page),
                       "Resources": [_dump(r, Context.SEARCH_RESPONSE, params) for r in page]},
                      detail={"filter": flt, "results": len(page)})

    return await call.run(work, read_body=search, target=request.url.path)


@router.post("/{kind}/.search")
async def search(request: Request, kind: str) -> Response:
    if kind and kind not in KINDS:
        return await _unknown(request)
    return await _list(request, kind, search=True)


@router.post("/.search")
async def search_all(request: Request) -> Response:
    """Users and groups at once: a filter attribute one of them lacks is false for it (RFC 7644 §3.4.2.1)."""
    return await search(request, "")


# -- writes ------------------------------------------------------------------------------------
async def _write(request: Request, kind: str, verb: str, ident: str | None,
                 work: Callable[[scim.ScimDirectory, Any], Response]) -> Response:
    call = Call(request, f"scim.{kind.lower()[:-1]}.{verb}")
    return await call.run(lambda d: work(d, call.payload), read_body=verb != "delete", target=ident)


@router.post("/{kind}")
async def create(request: Request, kind: str) -> Response:
    if kind not in KINDS:
        return await _unknown(request)

    def work(d: scim.ScimDirectory, body: Any) -> Response:
        ctx = Context.RESOURCE_CREATION_REQUEST
        made, change = (d.create_user(scim.parse(scim.User, body, ctx)) if kind == "Users"
                        else d.create_group(scim.parse(scim.Group, body, ctx)))
        return answer(_dump(made, Context.RESOURCE_CREATION_RESPONSE), 201, resource=made, change=change)

    return await _write(request, kind, "create", None, work)


@router.put("/{kind}/{ident}")
async def replace(request: Request, kind: str, ident: str) -> Response:
    if kind not in KINDS:
        return await _unknown(request)
    if_match = request.headers.get("if-match")

    def work(d: scim.ScimDirectory, body: Any) -> Response:
        ctx = Context.RESOURCE_REPLACEMENT_REQUEST
        done, change = (d.replace_user(ident, scim.parse(scim.User, body, ctx), if_match) if kind == "Users"
                        else d.replace_group(ident, scim.parse(scim.Group, body, ctx), if_match))
        return answer(_dump(done, Context.RESOURCE_REPLACEMENT_RESPONSE), resource=done, change=change)

    return await _write(request, kind, "replace", ident, work)


@router.patch("/{kind}/{ident}")
async def patch(request: Request, kind: str, ident: str) -> Response:
    if kind not in KINDS:
        return await _unknown(request)
    if_match = request.headers.get("if-match")

    def work(d: scim.ScimDirectory, body: Any) -> Response:
        done, change = (d.patch_user(ident, scim.parse_patch(scim.User, body), if_match) if kind == "Users"
                        else d.patch_group(ident, scim.parse_patch(scim.Group, body), if_match))
        return answer(_dump(done, Context.RESOURCE_PATCH_RESPONSE), resource=done, change=change)

    return await _write(request, kind, "patch", ident, work)


@router.delete("/{kind}/{ident}")
async def remove(request: Request, kind: str, ident: str) -> Response:
    if kind not in KINDS:
        return await _unknown(request)
    if_match = request.headers.get("if-match")

    def work(d: scim.ScimDirectory, body: Any) -> Response:
        change = d.delete_user(ident, if_match) if kind == "Users" else d.delete_group(ident, if_match)
        response = _Done(status_code=204)
        response.change = change
        return response

    return await _write(request, kind, "delete", ident, work)


# -- everything else ---------------------------------------------------------------------------
async def _unknown(request: Request) -> Response:
    path = request.url.path.removeprefix(router.prefix).strip("/")
    known = path.split("/")[0] in DISCOVERY + tuple(KINDS)

    def work(d: scim.ScimDirectory) -> Response:
        if known:
            return error(405, f"{request.method} is not allowed on {request.url.path}")
        raise NotFoundException(detail=f"no SCIM endpoint {request.url.path}")

    return await Call(request, "scim.unknown").run(work, target=request.url.path)


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def anything_else(request: Request, rest: str) -> Response:
    return await _unknown(request)
