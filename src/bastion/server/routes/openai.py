"""The OpenAI-compatible API under ``/v1``: chat completions (answers with citations), models, embeddings.

``model`` names an *assistant* (a model + prompt template + sources, ``[assistants.*]`` in
bastion.toml; ``bastion`` is the workspace default). The last user message is answered with
retrieval as the authenticated user; earlier turns are history for rewriting follow-ups.
Citations are inline (``[1]``) in the content and listed in the ``bastion`` extension field.
Streaming sends only checked text: drafts that fail the citation checks never leave the server.
"""
from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.ask import run_ask
from bastion.server.routes.common import AuditEntry, JsonObject, blocking_audited

if TYPE_CHECKING:
    from bastion.generation.results import Answer

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 20_000


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Annotated[str, Field(max_length=20000)] | list[dict[str, Any]] | None = None


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many options; sampling ones are ignored
    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=100)
    stream: bool = False


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _extension(ans: Answer) -> JsonObject:
    return {"lineage_id": ans.lineage_id, "abstained": ans.abstained, "decision": ans.decision,
            "reason": ans.reason, "grounded": ans.grounded, "citations": [c.to_dict() for c in ans.citations],
            "warnings": ans.warnings, "adapter": ans.adapter}


@router.get("/models", response_model=None, summary="Assistants, as OpenAI models")
async def models(ctx: Ctx = Depends(require("member", "models.list"))) -> JsonObject:
    await ctx.audit_async()
    created = int(ctx.server.started)
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "bastion"}
                                       for name in ctx.server.ws.assistants()]}


@router.post("/chat/completions", response_model=None,
             summary="Answer the last user message from the caller's sources, with citations")
async def chat_completions(body: ChatCompletionBody,
                           ctx: Ctx = Depends(require("member", "ask"))) -> JsonObject | StreamingResponse:
    server = ctx.server
    if body.model not in server.ws.assistants():
        raise Problem(404, "not-found", f"unknown model {body.model!r}; GET /v1/models lists the assistants")
    turns = [{"role": m.role, "content": _text(m.content)} for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise Problem(400, "bad-request", "the last message must be a non-empty user message")
    question = turns[-1]["content"]
    if len(question) > 4000:
        raise Problem(400, "bad-request", f"the question is {len(question)} characters long; the limit is 4000")
    ans = await server.blocking(run_ask, ctx, question, assistant=body.model, mode=None, history=turns[:-1])
    cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not body.stream:
        return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.answer},
                             "finish_reason": "stop"}],
                "usage": usage, "bastion": _extension(ans)}

    def events() -> Iterator[str]:
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model}
        yield _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]})
        text = ans.answer
        for i in range(0, len(text), 24):
            yield _sse(base | {"choices": [{"index": 0, "delta": {"content": text[i:i + 24]}, "finish_reason": None}]})
        yield _sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "bastion": _extension(ans)})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})


def _sse(data: JsonObject) -> str:
    return "data: " + json.dumps(data, ensure_ascii=False) + "\n\n"


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: Annotated[str, Field(max_length=MAX_EMBED_CHARS)] | list[Annotated[str, Field(max_length=MAX_EMBED_CHARS)]]
    encoding_format: Literal["float", "base64"] = "float"
    # extension: e5-style models embed queries and passages differently; OpenAI clients send neither
    input_type: Literal["passage", "query"] = "passage"


@router.post("/embeddings", response_model=None,
             summary="Embed text with the workspace's embedder (model: its id, or 'default'); "
             "input_type 'query' embeds search queries")
async def embeddings(body: EmbeddingBody, ctx: Ctx = Depends(require("member", "embeddings"))) -> JsonObject:
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or len(texts) > MAX_EMBED_INPUTS:
        raise Problem(400, "bad-request", f"input must hold 1 to {MAX_EMBED_INPUTS} strings")
    embedded = await blocking_audited(ctx, lambda: _embed(ctx, body, texts),
                                      entry=AuditEntry(detail={"inputs": len(texts)}))
    data = []
    for i, v in enumerate(embedded.vectors):
        value = base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": embedded.model,
            "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens}}


class _Embedded(NamedTuple):
    model: str
    vectors: np.ndarray
    tokens: int


def _embed(ctx: Ctx, body: EmbeddingBody, texts: list[str]) -> _Embedded:
    emb = ctx.server.ws.embedder
    if body.model not in (emb.id, "default"):
        raise Problem(404, "not-found", f"unknown embedding model {body.model!r}; use {emb.id!r} or 'default'")
    if body.input_type == "query":
        vectors = np.stack([np.asarray(emb.embed_query(t), dtype=np.float32) for t in texts])
    else:
        vectors = np.asarray(emb.embed_passages(texts), dtype=np.float32)
    return _Embedded(emb.id, vectors, sum(emb.count_tokens(t) for t in texts))
