"""Any OpenAI-compatible ``/v1/chat/completions`` server: vLLM, TGI, llama.cpp server, Ollama.

Retries with exponential backoff on connection errors, timeouts, HTTP 429 and 5xx, but only
before the first token arrives (a half-streamed answer is never silently restarted). The API
key is read from an environment variable, never stored.
"""
from __future__ import annotations

import json
import time
from typing import Any

import httpx

from bastion.core.errors import GenerationError, LLMUnavailable
from bastion.core.secrets import bearer_header
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation, OnToken, estimate_tokens


class _Retryable(Exception):
    pass


class OpenAIChatLLM:
    """Calls ``POST {url}/chat/completions`` with ``stream: true``."""

    sha256 = None

    def __init__(self, url: str, model: str, *, name: str | None = None, api_key_env: str | None = None,
                 context_window: int = 4096, timeout_s: float = 120.0, connect_timeout_s: float = 5.0,
                 retries: int = 3, backoff_s: float = 0.5, send_grammar: bool = False,
                 transport: httpx.BaseTransport | None = None):
        headers = bearer_header(api_key_env, "the model's api_key_env", GenerationError)
        self.url = url.rstrip("/")
        self.model = model
        self.name = name or model
        self.id = f"http:{model}@{self.url}"
        self.context_window = int(context_window)
        self._retries = retries
        self._backoff = backoff_s
        self._send_grammar = send_grammar
        self._client = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                    timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._tokenize_ok: bool | None = None

    # -- tokens ----------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """The server's own count where it offers ``/tokenize`` (llama.cpp, vLLM); else a high estimate."""
        if self._tokenize_ok is not False:
            root = self.url[:-3] if self.url.endswith("/v1") else self.url
            try:
                r = self._client.post(f"{root}/tokenize", json={"content": text, "prompt": text, "model": self.model,
                                                                "add_special": False}, timeout=5.0)
                if r.status_code == 200:
                    data = r.json()
                    tokens = data.get("tokens")
                    if isinstance(tokens, list):
                        self._tokenize_ok = True
                        return len(tokens)
                    count = data.get("count")
                    if isinstance(count, int):
                        self._tokenize_ok = True
                        return count
                self._tokenize_ok = False
            except (httpx.HTTPError, ValueError):
                self._tokenize_ok = False
        return estimate_tokens(text)

    # -- generation ------------------------------------------------------------------------
    def generate(self, messages: list[ChatMessage], params: DecodingParams,
                 on_token: OnToken | None = None) -> Generation:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = params.repeat_penalty  # llama.cpp, vLLM; others ignore unknown fields
        if params.grammar and self._send_grammar:
            body["grammar"] = params.grammar
        last: BaseException | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(min(8.0, self._backoff * 2 ** (attempt - 1)))
            try:
                return self._stream(body, on_token)
            except _Retryable as exc:
                last = exc.__cause__ or exc
        raise LLMUnavailable(f"LLM server {self.url} failed after {self._retries + 1} tries: {last}")

    def _stream(self, body: dict[str, Any], on_token: OnToken | None) -> Generation:
        t0 = time.perf_counter()
        parts: list[str] = []
        first = None
        usage: dict[str, Any] = {}
        finish = None
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code == 429 or resp.status_code >= 500:
                    resp.read()
                    raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}")
                if resp.status_code >= 400:
                    resp.read()
                    raise GenerationError(
                        f"LLM server {self.url} refused the request (HTTP {resp.status_code}): {resp.text[:300]}")
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise GenerationError(f"LLM server {self.url} sent a malformed stream event: {payload[:200]!r}") from None
                    if "error" in chunk:
                        raise GenerationError(f"LLM server {self.url} reported an error: {chunk['error']}")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            if first is None:
                                first = time.perf_counter() - t0
                            parts.append(delta)
                            if on_token:
                                on_token(delta)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
        except httpx.TimeoutException as exc:
            if parts:
                raise LLMUnavailable(f"LLM server {self.url} stopped mid-answer (timeout)") from exc
            raise _Retryable("timed out") from exc
        except httpx.TransportError as exc:
            if parts:
                raise LLMUnavailable(f"LLM server {self.url} dropped the connection mid-answer: {exc}") from exc
            raise _Retryable(f"cannot connect: {exc}") from exc
        return Generation(text="".join(parts), model_id=self.id, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), finish_reason=finish,
                          first_token_s=first, total_s=time.perf_counter() - t0)

    def close(self) -> None:
        self._client.close()
