"""Any OpenAI-compatible ``/v1/chat/completions`` server: vLLM, TGI, llama.cpp server, Ollama.

Time limits, all per :meth:`OpenAIChatLLM.generate` call (docs/model-servers.md):

* ``connect_timeout_s`` to open a connection to a node;
* ``first_token_timeout_s`` from sending the request to the first token (queueing on the model server
  and reading the prompt);
* ``idle_timeout_s`` between stream events once tokens flow;
* ``timeout_s``, the total deadline of the call, retries and waits included.

Retries happen only where they are safe and cannot show the user anything twice: a node that cannot be
reached or drops the connection before answering, and HTTP 429, 502, 503 and 504, which say "not now".
They honour ``Retry-After``, back off exponentially with jitter, go to the next node first, and stop
at the deadline. Nothing is retried once a token arrived (a half-streamed answer is never silently
restarted), and neither are timeouts, HTTP 500 or refusals (4xx): those fail at once with an error
that names the node and what happened. The API key is read from an environment variable, never stored.
"""
from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bastion.core.errors import GenerationError, LLMUnavailable
from bastion.core.secrets import bearer_header
from bastion.generation.http_nodes import Nodes, Watchdog, retry_after_s
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation, OnToken, estimate_tokens

RETRY_STATUS = frozenset({429, 502, 503, 504})


class _Retryable(Exception):
    """A try failed before any token, in a way another try may fix."""

    def __init__(self, node: str, what: str, wait_s: float | None = None) -> None:
        super().__init__(f"{node}: {what}")
        self.node, self.what, self.wait_s = node, what, wait_s


def split_urls(url: str | Sequence[str]) -> list[str]:
    """Node URLs from one URL, a comma- or space-separated string of them, or a list."""
    items = url.replace(",", " ").split() if isinstance(url, str) else [u.strip() for u in url]
    urls = [u.rstrip("/") for u in items if u]
    if not urls:
        raise GenerationError("an HTTP model needs at least one URL (e.g. http://host:8000/v1)")
    return urls


class OpenAIChatLLM:
    """Calls ``POST {url}/chat/completions`` with ``stream: true`` on one or several nodes.

    >>> llm = OpenAIChatLLM(["http://gpu1:8000/v1", "http://gpu2:8000/v1"], "qwen2.5-7b-instruct")
    >>> llm.id, llm.nodes.urls[1]
    ('http:qwen2.5-7b-instruct@http://gpu1:8000/v1', 'http://gpu2:8000/v1')
    >>> llm.close()
    """

    sha256 = None

    def __init__(self, url: str | Sequence[str], model: str, *, name: str | None = None,
                 api_key_env: str | None = None, context_window: int = 4096, timeout_s: float = 120.0,
                 connect_timeout_s: float = 5.0, first_token_timeout_s: float = 60.0, idle_timeout_s: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, cooldown_s: float = 30.0, send_grammar: bool = False,
                 transport: httpx.BaseTransport | None = None):
        headers = bearer_header(api_key_env, "the model's api_key_env", GenerationError)
        self.nodes = Nodes(split_urls(url), cooldown_s)
        self.url = self.nodes.urls[0]
        self.model = model
        self.name = name or model
        self.id = f"http:{model}@{self.url}"  # the model's identity in lineage: every node serves the same model
        self.context_window = int(context_window)
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.first_token_timeout_s, self.idle_timeout_s = first_token_timeout_s, idle_timeout_s
        self._retries = retries
        self._backoff = backoff_s
        self._send_grammar = send_grammar
        self._client = httpx.Client(headers=headers, transport=transport,
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
        body = self._body(messages, params)
        start = time.monotonic()
        deadline = start + self.timeout_s
        failures: list[str] = []
        tried: set[str] = set()
        tries = 0
        for tries in range(1, self._retries + 2):
            order = self.nodes.order()
            node = next((u for u in order if u not in tried), order[0])
            try:
                gen = self._stream(node, body, on_token, deadline)
            except _Retryable as exc:
                failures.append(str(exc))
                self.nodes.failed(node, exc.wait_s)
                if tries > self._retries:
                    break
                wait = self._wait_before_retry(tries, exc, fresh=any(u not in tried | {node} for u in order))
                tried.add(node)
                if time.monotonic() + wait >= deadline:
                    failures.append(f"no time left for another try within llm.timeout_s = {self.timeout_s:g} s")
                    break
                time.sleep(wait)
                continue
            except LLMUnavailable:  # timed out or broke mid-answer: later answers go to the other nodes first
                self.nodes.failed(node)
                raise
            self.nodes.ok(node)
            return gen
        where = f"server {self.url}" if len(self.nodes.urls) == 1 else "servers " + ", ".join(self.nodes.urls)
        raise LLMUnavailable(f"LLM {where} failed after {tries} tries in {time.monotonic() - start:.1f} s: "
                             + "; ".join(failures))

    def _wait_before_retry(self, tries: int, exc: _Retryable, *, fresh: bool) -> float:
        """Seconds to wait before the next try: none when an untried node is left, else exponential
        backoff with full jitter, at least what the server asked for with ``Retry-After``."""
        if fresh:
            return 0.0  # another node's Retry-After does not hold for this one
        return max(random.uniform(0, min(8.0, self._backoff * 2 ** (tries - 1))), exc.wait_s or 0.0)

    def _body(self, messages: list[ChatMessage], params: DecodingParams) -> dict[str, Any]:
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
        return body

    def _stream(self, node: str, body: dict[str, Any], on_token: OnToken | None, deadline: float) -> Generation:
        t0 = time.perf_counter()
        sent = time.monotonic()
        first_due = min(sent + self.first_token_timeout_s, deadline)
        parts: list[str] = []
        first = None
        usage: dict[str, Any] = {}
        finish = None
        dog = Watchdog()
        left = max(0.01, deadline - sent)  # the headers count against the time to the first token
        timeout = httpx.Timeout(left, connect=min(self.connect_timeout_s, left), read=max(0.01, first_due - sent))
        try:
            with self._client.stream("POST", f"{node}/chat/completions", json=body, timeout=timeout) as resp:
                if resp.status_code in RETRY_STATUS:
                    resp.read()
                    hint = retry_after_s(resp.headers.get("retry-after"))
                    said = f" (Retry-After {hint:g} s)" if hint is not None else ""
                    raise _Retryable(node, f"HTTP {resp.status_code}{said}: {resp.text[:200]}", hint)
                if resp.status_code >= 400:
                    resp.read()
                    raise GenerationError(f"LLM server {node} refused the request (HTTP {resp.status_code}): "
                                          f"{resp.text[:300]}")
                sock = _socket_of(resp)
                dog.arm(first_due, "first", sock)
                # reads of the body wait as long as the watchdog allows (it tells the limits apart); httpcore
                # reads this once, when the body's first read starts
                now = time.monotonic()
                body_read = min(deadline - now, max(first_due - now, self.idle_timeout_s))
                resp.request.extensions.get("timeout", {})["read"] = max(0.01, body_read)
                for line in resp.iter_lines():
                    if parts:
                        dog.arm(min(time.monotonic() + self.idle_timeout_s, deadline), "idle", sock)
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finish = finish or "stop"
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise GenerationError(f"LLM server {node} sent a malformed stream event: "
                                              f"{payload[:200]!r}") from None
                    if "error" in chunk:
                        raise GenerationError(f"LLM server {node} reported an error: {chunk['error']}")
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            if first is None:
                                first = time.perf_counter() - t0
                                dog.arm(min(time.monotonic() + self.idle_timeout_s, deadline), "idle", sock)
                            parts.append(delta)
                            if on_token:
                                on_token(delta)
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                dog.disarm()
                if dog.fired:
                    raise httpx.ReadError("stream ended by the watchdog")
                if finish is None:  # neither [DONE] nor a finish_reason: the server went away mid-stream
                    raise httpx.ReadError("the stream ended before the answer did")
        except httpx.ConnectError as exc:
            raise _Retryable(node, f"cannot connect ({exc})") from exc
        except httpx.ConnectTimeout as exc:
            raise _Retryable(node, f"no connection within connect_timeout_s = {self.connect_timeout_s:g} s") from exc
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise self._broken(node, exc, dog.fired or ("first" if not parts else "idle"), parts, deadline,
                               answered=isinstance(exc, httpx.TimeoutException) or dog.fired is not None) from exc
        finally:
            dog.stop()
        return Generation(text="".join(parts), model_id=self.id, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), finish_reason=finish,
                          first_token_s=first, total_s=time.perf_counter() - t0)

    def _broken(self, node: str, exc: Exception, phase: str, parts: list[str], deadline: float,
                answered: bool) -> Exception:
        """The error for a stream that timed out or broke: a time limit, named; or a dropped connection,
        retried only while nothing was received."""
        late = time.monotonic() >= deadline - 0.05
        if late:
            return LLMUnavailable(f"LLM server {node} did not finish within llm.timeout_s = {self.timeout_s:g} s"
                                  f" ({len(parts)} tokens received)")
        if answered and phase == "first":
            return LLMUnavailable(f"LLM server {node} sent no token within llm.first_token_timeout_s = "
                                  f"{self.first_token_timeout_s:g} s")
        if answered:
            return LLMUnavailable(f"LLM server {node} went silent for llm.idle_timeout_s = {self.idle_timeout_s:g} s "
                                  f"mid-answer after {len(parts)} tokens")
        if parts:
            return LLMUnavailable(f"LLM server {node} dropped the connection mid-answer after {len(parts)} tokens "
                                  f"({exc or type(exc).__name__}); not retried, the tokens were already shown")
        return _Retryable(node, f"connection dropped before the answer began ({exc or type(exc).__name__})")

    def close(self) -> None:
        self._client.close()


def _socket_of(resp: httpx.Response) -> socket.socket | None:
    """The response's socket (HTTP/1.1 through httpcore), for the watchdog; None where it is hidden."""
    stream = resp.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - a transport without sockets (tests) simply has no watchdog
        return None
    return sock if isinstance(sock, socket.socket) else None
