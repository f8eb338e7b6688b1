"""The OpenAI-compatible API under ``/v1``: chat completions (answers with citations), models, embeddings.

``model`` names an *assistant* (a model + prompt template + sources, ``[assistants.*]`` in
bastion.toml; ``bastion`` is the workspace default). The last user message is answered with
retrieval as the authenticated user; earlier turns are history for rewriting follow-ups.
Citations are inline (``[1]``) in the content and listed in the ``bastion`` extension field.
Streaming sends only checked text, sentence by sentence (:mod:`.openai_stream`). Options whose
effect Bastion cannot give (tools, several choices, log probabilities, JSON output, images, audio)
are refused with OpenAI's ``invalid_request_error`` naming the parameter, never silently ignored.
"""
from __future__ import annotations

import base64
import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import numpy as np
from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bastion.server.answer_gate import uses_llm
from bastion.server.auth import Ctx, require
from bastion.server.problems import Problem
from bastion.server.routes.ask import run_ask
from bastion.server.routes.common import AuditEntry, JsonObject, blocking_audited
from bastion.server.routes.openai_stream import Completion, completion_events, usage_of

if TYPE_CHECKING:
    from bastion.generation.results import Answer

router = APIRouter(prefix="/v1", tags=["openai"])
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 20_000


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Annotated[str, Field(max_length=20000)] | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    # OpenAI clients send many options: sampling ones are accepted and ignored (decoding is the
    # workspace's); those whose effect cannot be given are refused by _refuse_unsupported
    model_config = ConfigDict(extra="allow")
    model: Annotated[str, Field(min_length=1, max_length=200)]
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=100)
    stream: bool = False
    stream_options: StreamOptions | None = None


def _off(value: Any) -> bool:
    return value is None or value is False or value == [] or value == "none"


# parameter -> (is its value one Bastion can honour, why not)
UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "tools": (_off, "tool calling is not supported: answers come from the caller's documents, with citations"),
    "tool_choice": (_off, "tool calling is not supported"),
    "functions": (_off, "function calling is not supported"),
    "function_call": (_off, "function calling is not supported"),
    "n": (lambda v: v is None or v == 1, "only one choice is returned (n must be 1)"),
    "logprobs": (_off, "log probabilities are not returned"),
    "top_logprobs": (lambda v: v is None, "log probabilities are not returned"),
    "response_format": (lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
                        "only text answers are given: response_format must be {\"type\": \"text\"}"),
    "modalities": (lambda v: v is None or v == ["text"], "only text answers are given"),
    "audio": (lambda v: v is None, "audio output is not supported"),
}


def invalid_request(param: str | None, message: str, *, code: str = "unsupported_parameter",
                    status: int = 400) -> Problem:
    """A problem whose ``error`` object is OpenAI's ``invalid_request_error`` naming ``param``."""
    kind = {400: "bad-request", 404: "not-found"}.get(status, "bad-request")
    return Problem(status, kind, message, extra={"error": {"message": message, "type": "invalid_request_error",
                                                           "param": param, "code": code}})


def _refuse_unsupported(body: ChatCompletionBody) -> None:
    extra = body.model_extra or {}
    for param, (honoured, why) in UNSUPPORTED.items():
        if param in extra and not honoured(extra[param]):
            raise invalid_request(param, f"{param}: {why}")
    last = body.messages[-1]
    if isinstance(last.content, list):
        for j, part in enumerate(last.content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid_request(f"messages[{len(body.messages) - 1}].content[{j}]",
                                      f"content parts of type {kind!r} are not supported: send text",
                                      code="unsupported_value")


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


def _model(ctx: Ctx, name: str) -> JsonObject:
    return {"id": name, "object": "model", "created": int(ctx.server.started), "owned_by": "bastion"}


@router.get("/models", response_model=None, summary="Assistants, as OpenAI models")
async def models(ctx: Ctx = Depends(require("member", "models.list"))) -> JsonObject:
    await ctx.audit_async()
    return {"object": "list", "data": [_model(ctx, name) for name in ctx.server.ws.assistants()]}


@router.get("/models/{model_id}", response_model=None, summary="One assistant, as an OpenAI model")
async def model(model_id: Annotated[str, PathParam(max_length=200)],
                ctx: Ctx = Depends(require("member", "models.get"))) -> JsonObject:
    if model_id not in ctx.server.ws.assistants():
        raise invalid_request("model", f"the model {model_id!r} does not exist; GET /v1/models lists the assistants",
                              code="model_not_found", status=404)
    await ctx.audit_async(target=model_id)
    return _model(ctx, model_id)


@router.post("/completions", response_model=None, summary="Not provided: use /v1/chat/completions")
async def completions(ctx: Ctx = Depends(require("member", "completions"))) -> JsonObject:
    raise invalid_request(None, "the legacy completions API is not provided; send the prompt as a user message "
                                "to POST /v1/chat/completions", code="unsupported_endpoint", status=404)


@router.post("/chat/completions", response_model=None,
             summary="Answer the last user message from the caller's sources, with citations")
async def chat_completions(body: ChatCompletionBody,
                           ctx: Ctx = Depends(require("member", "ask"))) -> JsonObject | StreamingResponse:
    server = ctx.server
    if body.model not in server.ws.assistants():
        raise invalid_request("model", f"unknown model {body.model!r}; GET /v1/models lists the assistants",
                              code="model_not_found", status=404)
    _refuse_unsupported(body)
    turns = [{"role": m.role, "content": _text(m.content)} for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise invalid_request("messages", "the last message must be a non-empty user message", code="invalid_value")
    question = turns[-1]["content"]
    if len(question) > 4000:
        raise invalid_request("messages", f"the question is {len(question)} characters long; the limit is 4000",
                              code="invalid_value")
    req = Completion(id="chatcmpl-" + secrets.token_hex(12), created=int(time.time()), model=body.model,
                     question=question, history=turns[:-1],
                     include_usage=bool(body.stream_options and body.stream_options.include_usage))
    # 503 + Retry-After (an OpenAI-style error) when too many answers are in progress
    ticket = server.answers.admit(ctx.request.url.path, llm=uses_llm(server.ws, body.model, None))
    if body.stream:
        return StreamingResponse(completion_events(ctx, req, _extension, ticket), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def answer() -> tuple[Answer, JsonObject, str]:
        ans = run_ask(ctx, question, assistant=body.model, mode=None, history=req.history)
        return ans, *usage_of(ctx, req, ans)

    ans, usage, counted_by = await ticket.run(answer)
    return {"id": req.id, "object": "chat.completion", "created": req.created, "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.answer},
                         "finish_reason": "stop"}],
            "usage": usage, "bastion": _extension(ans) | {"usage_counted_by": counted_by}}


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
    # every assistant searches with the workspace's embedder, so the names /v1/models lists embed with it too
    if body.model not in (emb.id, "default") and body.model not in ctx.server.ws.assistants():
        raise invalid_request("model", f"unknown embedding model {body.model!r}; use {emb.id!r}, 'default' or an "
                                       "assistant GET /v1/models lists", code="model_not_found", status=404)
    if body.input_type == "query":
        vectors = np.stack([np.asarray(emb.embed_query(t), dtype=np.float32) for t in texts])
    else:
        vectors = np.asarray(emb.embed_passages(texts), dtype=np.float32)
    return _Embedded(emb.id, vectors, sum(emb.count_tokens(t) for t in texts))
