"""The real LLM backends: in-process llama.cpp on the default model, and the HTTP client
against a real OpenAI-compatible server (llama.cpp's own server from the same runtime)."""
import socket
import time

import pytest

from bastion.core.errors import GenerationError, LLMUnavailable, ModelError
from bastion.generation.llamacpp import LlamaCppLLM
from bastion.generation.openai_http import OpenAIChatLLM
from bastion.generation.protocol import ChatMessage, DecodingParams

pytestmark = pytest.mark.llm

MSGS = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def local(smollm2_file):
    llm = LlamaCppLLM(smollm2_file, name="smollm2-135m", sha256=None, context_window=2048, threads=2)
    yield llm
    llm.close()


def test_in_process_model_streams_counts_and_is_deterministic(local):
    tokens = []
    g1 = local.generate(MSGS, DecodingParams(max_tokens=24), tokens.append)
    g2 = local.generate(MSGS, DecodingParams(max_tokens=24))
    assert g1.text and "".join(tokens) == g1.text and len(tokens) > 1
    assert g1.text == g2.text  # temperature 0, fixed seed
    assert g1.prompt_tokens > 5 and 0 < g1.completion_tokens <= 24 and g1.first_token_s is not None
    assert local.count_tokens("hello world") in (2, 3) and local.id.startswith("gguf:smollm2-135m@")


def test_in_process_model_refuses_a_file_that_fails_its_digest(smollm2_file):
    with pytest.raises(ModelError, match="refusing to load"):
        LlamaCppLLM(smollm2_file, sha256="0" * 64)


def test_engine_port_is_closed_to_callers_without_the_key(local):
    import httpx

    r = httpx.get(local._server.listening_address + "/v1/models")
    assert r.status_code == 401


def test_http_backend_against_a_real_llama_cpp_server(local, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", local._key)
    remote = OpenAIChatLLM(local._server.listening_address + "/v1", "smollm2", api_key_env="TEST_LLM_KEY",
                           context_window=2048)
    tokens = []
    g = remote.generate(MSGS, DecodingParams(max_tokens=24), tokens.append)
    assert g.text and "".join(tokens) == g.text and g.completion_tokens
    assert g.text == local.generate(MSGS, DecodingParams(max_tokens=24)).text  # same engine, same answer
    assert remote.count_tokens("hello world") == local.count_tokens("hello world")  # the server's tokenizer
    monkeypatch.setenv("TEST_LLM_KEY", "wrong")
    bad = OpenAIChatLLM(local._server.listening_address + "/v1", "smollm2", api_key_env="TEST_LLM_KEY")
    with pytest.raises(GenerationError, match="refused"):
        bad.generate(MSGS, DecodingParams(max_tokens=4))


def test_http_backend_retries_then_names_the_dead_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    llm = OpenAIChatLLM(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff_s=0.05, connect_timeout_s=0.5)
    t = time.perf_counter()
    with pytest.raises(LLMUnavailable, match=f"127.0.0.1:{port}.*3 tries"):
        llm.generate(MSGS, DecodingParams(max_tokens=4))
    assert time.perf_counter() - t < 5
