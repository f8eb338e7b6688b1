"""The official ``openai`` Python client works against Bastion unchanged (a real uvicorn server)."""
from __future__ import annotations

import numpy as np
import openai
import pytest


@pytest.fixture
def oai(live, served):
    return lambda user: openai.OpenAI(base_url=f"{live}/v1", api_key=served.keys[user], max_retries=0, timeout=60)


def test_models_lists_the_assistants(oai, served):
    served.ws.config.assistants = {"finance-bot": __import__("bastion.core.config", fromlist=["AssistantConfig"]).AssistantConfig(
        sources=["docs"], mode="extract", description="finance questions")}
    ids = [m.id for m in oai("bob").models.list()]
    assert ids == ["bastion", "finance-bot"]


def test_chat_completion_answers_as_the_key_owner_with_citations(oai):
    alice = oai("alice").chat.completions.create(
        model="bastion", messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What was the Q3 2026 revenue?"}])
    content = alice.choices[0].message.content
    assert "48.2" in content and "[1]" in content
    ext = alice.model_extra["bastion"]
    assert ext["citations"][0]["path"] == "finance/q3.md" and ext["lineage_id"] and ext["abstained"] is False
    bob = oai("bob").chat.completions.create(model="bastion", messages=[{"role": "user", "content": "What was the Q3 2026 revenue?"}])
    assert "48.2" not in bob.choices[0].message.content
    assert all(c["path"] != "finance/q3.md" for c in bob.model_extra["bastion"]["citations"])


def test_streaming_chat_completion(oai):
    stream = oai("alice").chat.completions.create(
        model="bastion", stream=True, messages=[{"role": "user", "content": "What was the Q3 2026 revenue?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "48.2" in text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["bastion"]["citations"][0]["path"] == "finance/q3.md"


def test_embeddings_in_both_encodings(oai, served):
    client = oai("bob")
    model = served.ws.embedder.id
    default = client.embeddings.create(model=model, input=["hotel cap", "酒店"])  # the client asks for base64
    floats = client.embeddings.create(model="default", input="hotel cap", encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == served.ws.embedder.dimension
    np.testing.assert_allclose(default.data[0].embedding, floats.data[0].embedding, rtol=1e-6)
    np.testing.assert_allclose(floats.data[0].embedding, served.ws.embedder.embed_passages(["hotel cap"])[0], rtol=1e-5)
    query = client.embeddings.create(model="default", input="hotel cap", encoding_format="float",
                                     extra_body={"input_type": "query"})
    np.testing.assert_allclose(query.data[0].embedding, served.ws.embedder.embed_query("hotel cap"), rtol=1e-5)


def test_errors_reach_the_client_as_openai_errors(oai, live):
    with pytest.raises(openai.NotFoundError) as err:
        oai("bob").chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert "unknown model" in str(err.value)
    bad = openai.OpenAI(base_url=f"{live}/v1", api_key="bst_nope_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError):
        oai("bob").chat.completions.create(model="bastion", messages=[{"role": "assistant", "content": "hello"}])
