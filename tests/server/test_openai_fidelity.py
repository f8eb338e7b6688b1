"""What OpenAI clients rely on, with the official ``openai`` client against a real uvicorn server:
checked sentences stream as the model writes them (and an unsupported one never does), usage, the
options that are refused rather than ignored, ``/v1/models/{id}``, embeddings by assistant name."""
from __future__ import annotations

import re
import time

import httpx
import numpy as np
import openai
import pytest

from bastion.core.config import AssistantConfig
from bastion.testing.fake_llm import ScriptedLLM

Q3 = "What was the Q3 2026 revenue?"
GOOD = "Q3 2026 revenue was EUR 48.2 million [{n}]. Revenue was up 9 percent [{n}]."
UNSUPPORTED = "Trains are always free for everyone [{n}]."
DRAFT = GOOD + " " + UNSUPPORTED + " Revenue was up 9 percent [{n}]."


def _q3_passage(messages) -> int:
    """The number the prompt gives the Q3 passage."""
    found = re.search(r"^\[(\d+)\][^\n]*48\.2", messages[-1].content, re.M)
    assert found, "the Q3 passage is not in the prompt"
    return int(found.group(1))


class SlowLLM(ScriptedLLM):
    """The scripted model, writing one word per ``delay`` seconds; ``finished`` holds when each call ended."""

    def __init__(self, template: str, delay: float = 0.04):
        super().__init__(lambda messages: template.format(n=_q3_passage(messages)), model_id="slow")
        self.delay = delay
        self.finished: list[float] = []

    def generate(self, messages, params, on_token=None):
        def slowly(token: str) -> None:
            time.sleep(self.delay)
            on_token(token)

        gen = super().generate(messages, params, slowly if on_token else None)
        self.finished.append(time.monotonic())
        return gen


@pytest.fixture
def writer(served):
    """An assistant ``writer`` that answers with the (slow, scripted) model; install it with ``use``."""
    served.ws.config.answer.cache = False
    served.ws.config.assistants = {"writer": AssistantConfig(mode="answer")}

    def use(template: str) -> SlowLLM:
        llm = SlowLLM(template)
        served.ws.use_llm(llm)
        return llm

    return use


@pytest.fixture
def oai(live, served):
    return lambda user="alice": openai.OpenAI(base_url=f"{live}/v1", api_key=served.keys[user], max_retries=0,
                                              timeout=60)


def _timed_stream(client, model="writer", **kw):
    """(arrival time, chunk) of every chunk of a streamed completion."""
    stream = client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": Q3}],
                                            **kw)
    out = []
    for chunk in stream:
        out.append((time.monotonic(), chunk))
    return out


def _content(chunks) -> list[tuple[float, str]]:
    return [(t, c.choices[0].delta.content) for t, c in chunks if c.choices and c.choices[0].delta.content]


def test_checked_sentences_stream_while_the_model_writes(oai, writer):
    llm = writer(GOOD)
    chunks = _timed_stream(oai(), stream_options={"include_usage": True})
    pieces = _content(chunks)
    n = _n(pieces)
    assert [text for _, text in pieces] == [f"Q3 2026 revenue was EUR 48.2 million. [{n}]",
                                            f" Revenue was up 9 percent. [{n}]"]
    first_at, last_at = pieces[0][0], pieces[-1][0]
    assert first_at < llm.finished[0] and last_at - first_at > 0.1  # progress, not one block at the end
    text = "".join(t for _, t in pieces)
    final = chunks[-2][1]
    assert final.choices[0].finish_reason == "stop"
    ext = final.model_extra["bastion"]
    assert ext["decision"] == "answered" and ext["stream"] == {"sentences_released": 1, "superseded": False}
    assert text == f"Q3 2026 revenue was EUR 48.2 million. [{n}] Revenue was up 9 percent. [{n}]"
    usage = chunks[-1][1]
    assert usage.choices == [] and usage.usage.completion_tokens == len(GOOD.split())
    assert usage.usage.prompt_tokens > 0 and usage.usage.total_tokens == usage.usage.prompt_tokens + 14


def _n(pieces) -> str:
    """The passage number the first streamed sentence cites."""
    found = re.search(r"\[(\d+)\]", pieces[0][1])
    assert found, pieces
    return found.group(1)


def test_a_sentence_that_fails_the_check_is_never_streamed(oai, writer):
    writer(DRAFT)
    chunks = _timed_stream(oai())
    text = "".join(t for _, t in _content(chunks))
    assert "Trains" not in text and "free" not in text
    assert text.startswith("Q3 2026 revenue was EUR 48.2 million. [")  # the checked sentences went out first
    ext = chunks[-1][1].model_extra["bastion"]
    assert ext["decision"] == "extracted" and ext["stream"] == {"sentences_released": 2, "superseded": True}
    # then the stream says the answer changed course, and quotes the documents
    assert "could not be checked against the sources" in text and "“Q3 2026 revenue was EUR 48.2 million" in text
    # the same question without streaming: the same decision, and the draft is not shown either
    whole = oai().chat.completions.create(model="writer", messages=[{"role": "user", "content": Q3}])
    assert "Trains" not in whole.choices[0].message.content
    assert whole.model_extra["bastion"]["decision"] == "extracted"
    assert whole.usage.completion_tokens == len(DRAFT.split())  # the draft the model wrote, though not shown


def test_the_stream_opens_at_once_and_keeps_alive(live, served, writer, monkeypatch):
    from bastion.server.routes import openai_stream

    monkeypatch.setattr(openai_stream, "KEEPALIVE_S", 0.1)
    llm = writer(GOOD)
    llm.delay = 0.08
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    with httpx.stream("POST", f"{live}/v1/chat/completions", headers={"Authorization": f"Bearer {served.keys['alice']}"},
                      json={"model": "writer", "stream": True, "messages": [{"role": "user", "content": Q3}]},
                      timeout=60) as r:
        for line in r.iter_lines():
            if line:
                lines.append((time.monotonic(), line))
    assert '"role": "assistant"' in lines[0][1] and lines[0][0] - started < llm.finished[0] - started
    assert any(line == ": keep-alive" for _, line in lines)
    assert lines[-1][1] == "data: [DONE]"


def test_usage_is_counted_without_a_model_too(oai):
    ans = oai().chat.completions.create(model="bastion", messages=[{"role": "user", "content": Q3}])
    assert ans.model_extra["bastion"]["decision"] == "extracted"
    assert ans.usage.prompt_tokens > 0 and ans.usage.completion_tokens > 0
    assert ans.usage.total_tokens == ans.usage.prompt_tokens + ans.usage.completion_tokens
    assert ans.model_extra["bastion"]["usage_counted_by"] == "embedder"


REFUSED = {
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    "tool_choice": "required",
    "functions": [{"name": "lookup"}],
    "n": 2,
    "logprobs": True,
    "response_format": {"type": "json_object"},
}


def test_options_bastion_cannot_honour_are_refused_naming_them(oai):
    client = oai("bob")
    for param, value in REFUSED.items():
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="bastion", messages=[{"role": "user", "content": Q3}],
                                           **{param: value})
        assert (err.value.param, err.value.type, err.value.code) == (param, "invalid_request_error",
                                                                     "unsupported_parameter")
        assert param in err.value.message


def test_what_is_honoured_or_harmless_still_answers(oai):
    ans = oai("alice").chat.completions.create(
        model="bastion", messages=[{"role": "user", "content": [{"type": "text", "text": Q3}]}],
        n=1, response_format={"type": "text"}, tools=[], temperature=0.3, logprobs=False)
    assert "48.2" in ans.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        oai("alice").chat.completions.create(model="bastion", messages=[{"role": "user", "content": [
            {"type": "text", "text": Q3}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}])
    assert err.value.param == "messages[0].content[1]" and "image_url" in err.value.message


def test_models_by_id_and_embeddings_by_any_listed_name(oai, served):
    client = oai("bob")
    assert client.models.retrieve("bastion").id == "bastion"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert (err.value.code, err.value.param) == ("model_not_found", "model") and "gpt-4o" in err.value.message
    listed = [m.id for m in client.models.list()]
    by_name = client.embeddings.create(model=listed[0], input="hotel cap", encoding_format="float")
    np.testing.assert_allclose(by_name.data[0].embedding, served.ws.embedder.embed_passages(["hotel cap"])[0],
                               rtol=1e-5)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="hotel cap")


def test_legacy_completions_point_to_chat_completions(oai):
    with pytest.raises(openai.NotFoundError) as err:
        oai("bob").completions.create(model="bastion", prompt="What was the Q3 2026 revenue?")
    assert "/v1/chat/completions" in err.value.message
