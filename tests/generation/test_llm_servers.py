"""The LLM on model servers (vLLM, TGI, llama.cpp server): the HTTP client's time limits, retries and
failover against a real, controllable OpenAI-compatible server on loopback, and ``bastion serve``
pointed at a slow one: health and search stay fast, answers beyond the bound get 503 + Retry-After."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bastion.core.errors import GenerationError, LLMUnavailable
from bastion.generation.openai_http import OpenAIChatLLM
from bastion.generation.protocol import ChatMessage, DecodingParams
from tests.conftest import free_port, stop_process

MSGS = [ChatMessage("user", "How much may a hotel cost per night?")]
ANSWER = ["Hotel ", "costs ", "are ", "capped ", "at ", "EUR ", "180 ", "per ", "night ", "[1]."]
PARAMS = DecodingParams(max_tokens=32)


class ModelServer:
    """An OpenAI-compatible model server in a thread, told what to do per request.

    A step is a dict: ``{"mode": "ok", "first": s, "gap": s}`` streams :data:`ANSWER` (``first`` seconds
    before the first token, ``gap`` between tokens); ``{"mode": "status", "code": 503, "retry_after": "1"}``;
    ``{"mode": "hang"}`` sends nothing; ``{"mode": "drop", "after": n}`` sends n tokens and closes the
    connection; ``{"mode": "stall", "after": n}`` sends n tokens and then nothing. ``plan`` holds the
    next requests' steps, ``default`` the rest. It also answers ``/v1/embeddings`` (hashed words).
    """

    def __init__(self) -> None:
        self.plan: list[dict] = []
        self.default: dict = {"mode": "ok"}
        self.calls: list[str] = []
        self.active = self.peak = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.model = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def step(self) -> dict:
        with self._lock:
            step = self.plan.pop(0) if self.plan else self.default
            self.calls.append(step["mode"])
            return step

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _embedding(text: str, dim: int = 64) -> list[float]:
    vec = [0.0] * dim
    for word in text.lower().split():
        vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vec


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, code: int, data: dict, headers: dict | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(code)
        for k, v in {"content-type": "application/json", "content-length": str(len(raw)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _chunk(self, data: str) -> None:
        raw = data.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _event(self, delta: dict, finish: str | None = None) -> None:
        self._chunk("data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                    + "\n\n")

    def do_POST(self) -> None:
        model: ModelServer = self.server.model  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return self._json(200, {"data": [{"index": i, "embedding": _embedding(t)} for i, t in enumerate(inputs)]})
        if not self.path.endswith("/chat/completions"):
            return self._json(404, {"error": "not found"})
        step = model.step()
        with model._lock:
            model.active += 1
            model.peak = max(model.peak, model.active)
        try:
            self._answer(model, step)
        finally:
            with model._lock:
                model.active -= 1

    def _answer(self, model: ModelServer, step: dict) -> None:
        mode = step["mode"]
        if mode == "status":
            extra = {"retry-after": step["retry_after"]} if "retry_after" in step else {}
            return self._json(step["code"], {"error": {"message": f"model server says {step['code']}"}}, extra)
        if mode == "hang":
            model.stop.wait(step.get("s", 60))
            self.close_connection = True
            return None
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        model.stop.wait(step.get("first", 0))
        for i, token in enumerate(ANSWER):
            if mode in ("drop", "stall") and i == step["after"]:
                if mode == "stall":
                    model.stop.wait(60)
                self.close_connection = True  # the body ends without its last chunk: the connection broke
                return None
            self._event({"content": token})
            if step.get("gap"):
                model.stop.wait(step["gap"])
        self._event({}, "stop")
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        return None


@pytest.fixture
def models():
    started: list[ModelServer] = []

    def start() -> ModelServer:
        started.append(ModelServer())
        return started[-1]

    yield start
    for m in started:
        m.close()


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def _timed(fn):
    t = time.monotonic()
    try:
        return fn(), time.monotonic() - t
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc, time.monotonic() - t


# -- the client ----------------------------------------------------------------------------------
def test_a_503_with_retry_after_is_retried_after_the_wait_then_answers(models):
    m = models()
    m.plan = [{"mode": "status", "code": 503, "retry_after": "1"}]
    llm = OpenAIChatLLM(m.url, "m", backoff_s=0.01)
    gen, took = _timed(lambda: llm.generate(MSGS, PARAMS))
    assert gen.text == "".join(ANSWER) and m.calls == ["status", "ok"]
    assert 1.0 <= took < 3.0  # the server's Retry-After was honoured, not the 10 ms backoff


def test_a_server_that_stays_overloaded_fails_within_the_deadline_naming_it(models):
    m = models()
    m.default = {"mode": "status", "code": 503, "retry_after": "1"}
    llm = OpenAIChatLLM(m.url, "m", retries=10, timeout_s=2.5)
    exc, took = _timed(lambda: llm.generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and took < 3.0
    assert m.url in str(exc) and "HTTP 503" in str(exc) and "llm.timeout_s = 2.5 s" in str(exc)
    m.default = {"mode": "status", "code": 429, "retry_after": "30"}  # asks for longer than the deadline allows
    exc, took = _timed(lambda: llm.generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and took < 1.0 and "Retry-After 30 s" in str(exc)


def test_http_500_and_refusals_are_not_retried(models):
    m = models()
    m.default = {"mode": "status", "code": 500}
    exc, _ = _timed(lambda: OpenAIChatLLM(m.url, "m").generate(MSGS, PARAMS))
    assert isinstance(exc, GenerationError) and "HTTP 500" in str(exc) and m.url in str(exc)
    assert m.calls == ["status"]


def test_a_dead_node_fails_over_to_the_next_at_once_and_then_sits_out(models):
    live, dead = models(), _dead_url()
    llm = OpenAIChatLLM([dead, live.url], "m", cooldown_s=30)
    llm.nodes._next = 0  # the dead node first
    gen, took = _timed(lambda: llm.generate(MSGS, PARAMS))
    assert gen.text == "".join(ANSWER) and took < 1.0  # no backoff before an untried node
    assert [llm.nodes.order()[0] for _ in range(3)] == [live.url] * 3  # the dead one rests for cooldown_s
    overloaded = models()
    overloaded.default = {"mode": "status", "code": 503}
    llm = OpenAIChatLLM(f"{overloaded.url},{live.url}", "m")  # a comma-separated list works too
    llm.nodes._next = 0
    assert llm.generate(MSGS, PARAMS).text == "".join(ANSWER) and overloaded.calls == ["status"]


def test_nothing_is_retried_once_tokens_reached_the_user(models):
    m = models()
    m.plan = [{"mode": "drop", "after": 3}]
    shown: list[str] = []
    exc, _ = _timed(lambda: OpenAIChatLLM(m.url, "m", retries=3).generate(MSGS, PARAMS, shown.append))
    assert isinstance(exc, LLMUnavailable) and "mid-answer after 3 tokens" in str(exc) and m.url in str(exc)
    assert shown == ANSWER[:3] and m.calls == ["drop"]  # one try: the user saw tokens, they are not sent twice
    m.plan = [{"mode": "drop", "after": 0}]  # dropped before any token: safe to retry
    assert OpenAIChatLLM(m.url, "m", backoff_s=0.01).generate(MSGS, PARAMS).text == "".join(ANSWER)


def test_no_first_token_silence_and_the_deadline_are_timeouts_that_say_which(models):
    m = models()
    m.default = {"mode": "hang"}
    exc, took = _timed(lambda: OpenAIChatLLM(m.url, "m", first_token_timeout_s=1).generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and "no token within llm.first_token_timeout_s = 1 s" in str(exc)
    assert 0.9 < took < 2.0 and m.calls == ["hang"]
    m.default = {"mode": "ok", "first": 3}  # headers at once, then a long prefill
    exc, took = _timed(lambda: OpenAIChatLLM(m.url, "m", first_token_timeout_s=1).generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and "first_token_timeout_s" in str(exc) and took < 2.0
    m.default = {"mode": "stall", "after": 2}
    exc, took = _timed(lambda: OpenAIChatLLM(m.url, "m", idle_timeout_s=1).generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and "silent for llm.idle_timeout_s = 1 s" in str(exc)
    assert "after 2 tokens" in str(exc) and took < 2.0
    m.default = {"mode": "ok", "gap": 0.4}  # 4 s in all, steady tokens
    exc, took = _timed(lambda: OpenAIChatLLM(m.url, "m", timeout_s=1.5).generate(MSGS, PARAMS))
    assert isinstance(exc, LLMUnavailable) and "did not finish within llm.timeout_s = 1.5 s" in str(exc)
    assert took < 2.2


# -- bastion serve in front of a slow model server --------------------------------------------------
SLOW_S = 5.0


@pytest.fixture(scope="module")
def slow_serve(tmp_path_factory):
    """``bastion serve`` (a subprocess) answering with a model server that takes 5 s per answer:
    llm.max_concurrent = 2, llm.max_queue = 1, and only 2 shared worker threads."""
    from bastion.accounts import Accounts
    from bastion.workspace import Workspace

    model = ModelServer()
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "docs").mkdir()
    (tmp / "docs" / "travel.md").write_text("# Travel policy\n\nHotel costs are capped at EUR 180 per night in Europe.\n")
    home = tmp / "ws"
    port = free_port()
    env = {"BASTION_EMBEDDER__BACKEND": "openai", "BASTION_EMBEDDER__URL": model.url,
           "BASTION_EMBEDDER__MODEL": "hashed-words", "BASTION_LLM__MODEL": "remote",
           "BASTION_LLM__MAX_CONCURRENT": "2", "BASTION_LLM__MAX_QUEUE": "1", "BASTION_LLM__QUEUE_TIMEOUT_S": "30",
           "BASTION_ANSWER__CACHE": "false", "BASTION_ANSWER__MIN_EVIDENCE": "-1",
           "BASTION_ANSWER__MIN_EVIDENCE_ZH": "-1", "BASTION_SERVER__WORKERS_THREADS": "2",
           "BASTION_SEARCH__WARM_CHECK_S": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        Workspace.init(home).close()
        ws = Workspace.open(home)
        ws.sources.add_folder("docs", tmp / "docs", acl="everyone")
        ws.sync()
        ws.directory.add_user("root", groups=["it"], role="admin")
        ws.directory.add_user("bob", groups=["staff"])
        ws.models.add_endpoint("remote", model.url, "fake-7b")
        acc = Accounts(ws.catalog)
        keys = {u: acc.create_key(u, name="test")[1] for u in ("root", "bob")}
        ws.close()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    bastion = Path(sys.executable).with_name("bastion")
    proc = subprocess.Popen([str(bastion), "--home", str(home), "serve", "--port", str(port)],
                            env=os.environ | env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        stop_process(proc)
        pytest.fail(f"bastion serve did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    # warm up as a running server would be: the index and the answer path loaded, on a fast model
    model.default = {"mode": "ok"}
    assert httpx.post(f"{base}/api/v1/search", json={"query": "hotel"}, timeout=60,
                      headers={"Authorization": f"Bearer {keys['bob']}"}).status_code == 200
    assert _ask(base, keys["bob"]).status_code == 200
    model.default = {"mode": "ok", "first": SLOW_S}
    yield base, keys, model
    stop_process(proc)
    model.close()


def _ask(base: str, key: str, question: str = "How much may a hotel cost per night?") -> httpx.Response:
    return httpx.post(f"{base}/api/v1/ask", json={"question": question},
                      headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_a_slow_model_delays_neither_health_nor_search_and_excess_answers_get_503(slow_serve):
    base, keys, model = slow_serve
    model.calls.clear()
    key = {"Authorization": f"Bearer {keys['bob']}"}
    with ThreadPoolExecutor(8) as pool:
        asks = [pool.submit(_timed, lambda: _ask(base, keys["bob"])) for _ in range(6)]
        time.sleep(1.0)  # the admitted answers are now waiting on the model
        health, health_s = _timed(lambda: httpx.get(f"{base}/healthz", timeout=10))
        search, search_s = _timed(lambda: httpx.post(f"{base}/api/v1/search", json={"query": "hotel"}, headers=key,
                                                     timeout=10))
        chat, chat_s = _timed(lambda: httpx.post(f"{base}/v1/chat/completions", headers=key, timeout=10,
                                                 json={"model": "bastion", "messages": [{"role": "user",
                                                                                         "content": "Hotel cap?"}]}))
        streamed = httpx.post(f"{base}/api/v1/ask", json={"question": "Hotel cap?", "stream": True}, headers=key,
                              timeout=10)
        results = [f.result() for f in asks]
    assert health.status_code == 200 and health_s < 1.0
    assert search.status_code == 200 and search.json()["hits"] and search_s < 1.0
    refused = [(r, s) for r, s in results if r.status_code == 503]
    done = [(r, s) for r, s in results if r.status_code == 200]
    assert len(done) == 3 and len(refused) == 3  # 2 generating + 1 waiting; the rest refused at once
    for r, took in refused:
        # refused without waiting for the model (5 s); the time is sign-in and admission on 2 busy cores
        assert took < SLOW_S / 2 and int(r.headers["retry-after"]) >= 1 and "llm.max_concurrent" in r.json()["detail"]
    assert all(r.json()["decision"] == "answered" and "180" in r.json()["answer"] for r, _ in done)
    assert sorted(round(s / SLOW_S) for _, s in done) == [1, 1, 2]  # the waiting one ran after a slot came free
    assert model.peak <= 2 and model.calls.count("ok") == 3
    # the OpenAI-compatible route was full too: an OpenAI-style error, with Retry-After
    assert chat.status_code == 503 and chat_s < SLOW_S / 2 and chat.headers["retry-after"]
    assert chat.json()["error"]["code"] == "overloaded" and chat.json()["error"]["type"] == "server_error"
    assert streamed.status_code == 503 and streamed.headers["retry-after"]  # a real 503, not an error event
    metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {keys['root']}"}, timeout=10).text
    assert 'bastion_answers_rejected_total{reason="full"} 5.0' in metrics and "bastion_answers_queued 0.0" in metrics
    assert _ask(base, keys["bob"]).status_code == 200  # the load gone, answers are admitted again


def test_a_failing_model_server_falls_back_to_quotes_and_says_why(slow_serve):
    base, keys, model = slow_serve
    model.plan = [{"mode": "status", "code": 500}]
    r = _ask(base, keys["root"])
    assert r.status_code == 200
    body = r.json()
    assert body["decision"] == "extracted" and "180" in body["answer"]  # the quotes still answer
    assert "HTTP 500" in body["reason"] and model.url in body["reason"]  # an admin sees which server and what


# -- the gate on its own -------------------------------------------------------------------------
def test_the_gate_bounds_running_and_waiting_answers_and_times_out_the_wait():
    import anyio

    from bastion.core.config import LLMConfig
    from bastion.server.answer_gate import AnswerGate
    from bastion.server.problems import Problem

    assert AnswerGate.from_config(LLMConfig(), in_process=True, request_timeout_s=60).max_concurrent == 1
    assert AnswerGate.from_config(LLMConfig(), in_process=False, request_timeout_s=60).max_concurrent == 4
    gate = AnswerGate(1, 1, queue_timeout_s=0.5, request_timeout_s=60)
    outcomes: dict[str, object] = {}

    async def one(name: str, seconds: float) -> None:
        t = time.monotonic()
        try:
            await gate.admit().run(time.sleep, seconds)
            outcomes[name] = ("ok", time.monotonic() - t)
        except Problem as p:
            outcomes[name] = (p.status, time.monotonic() - t, p.detail, p.headers.get("Retry-After"))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "running", 1.5)
            await anyio.sleep(0.1)
            tg.start_soon(one, "waiting", 0.1)
            await anyio.sleep(0.1)
            tg.start_soon(one, "refused", 0.1)
            await anyio.sleep(0.05)
            t = time.monotonic()  # an answer without the LLM (extract mode) is not held back by a full gate
            await gate.admit(llm=False).run(time.sleep, 0)
            outcomes["extract"] = time.monotonic() - t
        unused = gate.admit()
        del unused  # a ticket dropped unrun gives its place back
        await gate.admit().run(time.sleep, 0)

    anyio.run(main)
    assert outcomes["running"][0] == "ok"
    status, took, detail, retry = outcomes["waiting"]
    assert status == 503 and 0.4 < took < 1.0 and "llm.queue_timeout_s = 0.5 s" in detail and int(retry) >= 1
    status, took, detail, retry = outcomes["refused"]
    assert status == 503 and took < 0.1 and "1 being generated, 1 waiting" in detail
    assert outcomes["extract"] < 0.3
    assert gate.admitted == 0 and gate.running == 0
