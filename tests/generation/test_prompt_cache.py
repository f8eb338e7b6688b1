"""The prompt-prefix cache (``[llm] prompt_cache``) never changes an answer.

A real engine on the default model answers real grounded-QA prompts (the built-in template, two
few-shot examples) with the fixed part of the prompt cached; each answer is compared, greedy and
token for token, with a fresh engine that has the cache off. The engine's own timings say how many
prompt tokens each answer evaluated: what the cache saves.
"""
from __future__ import annotations

import json

import pytest

from bastion.generation.llamacpp import LlamaCppLLM
from bastion.generation.prompting import Passage, PromptTemplate, load_template
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation

pytestmark = pytest.mark.llm

PARAMS = DecodingParams(max_tokens=24)
POLICY = [f"Requests above {n * 250} euros need the approval of manager {n % 7}; travel costs of trip {n} are "
          f"refunded within {n % 5 + 2} weeks after the receipt is filed in the finance portal." for n in range(1, 60)]
SHOTS = [{"question": "Who approves 500 euros?", "sources": POLICY[1:3],
          "answer": "Manager 2 approves requests above 500 euros [1]."},
         {"question": "How fast is trip 3 refunded?", "sources": POLICY[2:4],
          "answer": "Trip 3 is refunded within 5 weeks [1]."}]
# (question, sources): short, the same again, another, and one near 1,000 prompt tokens
ASKS = [("Who approves 3000 euros?", POLICY[10:13]),
        ("Who approves 3000 euros?", POLICY[10:13]),
        ("How fast is trip 14 refunded?", POLICY[12:15]),
        ("Which manager approves 9000 euros, and how fast is trip 40 refunded?", POLICY[20:33])]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> PromptTemplate:
    shots = tmp_path_factory.mktemp("prompt") / "shots.json"
    shots.write_text(json.dumps(SHOTS), encoding="utf-8")
    return load_template("grounded-qa", few_shot_file=shots)


def _messages(template: PromptTemplate, question: str, sources: list[str]) -> list[ChatMessage]:
    return template.messages(question, [Passage(i + 1, "Finance policy", s) for i, s in enumerate(sources)], "en")


@pytest.fixture(scope="module")
def uncached(smollm2_file):
    """A fresh engine with the cache off, and its answers (each prompt asked once)."""
    llm = LlamaCppLLM(smollm2_file, runtime="stock", context_window=2048, prompt_cache=False)
    answers: dict[tuple[tuple[str, str], ...], tuple[Generation, dict]] = {}

    def answer(msgs: list[ChatMessage]) -> tuple[Generation, dict]:
        key = tuple((m.role, m.content) for m in msgs)
        if key not in answers:
            answers[key] = (llm.generate(msgs, PARAMS), llm.last_timings)
        return answers[key]

    yield answer
    llm.close()


@pytest.fixture(scope="module")
def cached(smollm2_file):
    llm = LlamaCppLLM(smollm2_file, runtime="stock", context_window=2048, prompt_cache=True)
    yield llm
    llm.close()


def test_cached_answers_are_the_uncached_answers_and_evaluate_only_the_question(template, uncached, cached):
    for i, (question, sources) in enumerate(ASKS):
        msgs = _messages(template, question, sources)
        if i == len(ASKS) - 1:  # the long one streams, as the API and the CLI answer
            pieces: list[str] = []
            got = cached.generate(msgs, PARAMS, on_token=pieces.append)
            assert "".join(pieces) == got.text
        else:
            got = cached.generate(msgs, PARAMS)
        warm = cached.last_timings
        want, cold = uncached(msgs)
        assert got.text and got.text == want.text, (i, question)
        assert got.completion_tokens == want.completion_tokens and got.prompt_tokens == want.prompt_tokens
        n, fixed = want.prompt_tokens, warm["fixed_n"]
        # the fixed part: system prompt + two examples + the question's role header
        assert fixed == cold["fixed_n"] and 300 < fixed < n
        assert (cold["prompt_n"], cold["cache_n"]) == (n, 0)  # the uncached engine evaluates every token
        if i == 0:  # nothing cached yet
            assert (warm["prompt_n"], warm["cache_n"]) == (n, 0)
        else:  # only the sources and the question (and the fixed part's last token) are evaluated
            assert (warm["prompt_n"], warm["cache_n"]) == (n - fixed + 1, fixed - 1)
    assert 900 < n < 1100  # the last prompt is source-heavy


def test_a_changed_system_prompt_is_evaluated_afresh_and_answers_as_uncached(template, uncached, cached):
    original = _messages(template, *ASKS[2])
    changed = [ChatMessage("system", "You answer questions about company policies. Quote the source number, "
                           "like [1], after each sentence."), *original[1:]]
    cached.generate(original, PARAMS)
    for msgs in (changed, original):  # each time the fixed part differs from the cached one
        got = cached.generate(msgs, PARAMS)
        assert cached.last_timings["cache_n"] == 0 and cached.last_timings["prompt_n"] == got.prompt_tokens
        assert got.text and got.text == uncached(msgs)[0].text
    again = cached.generate(original, PARAMS)  # and the restored system prompt is cached again
    assert again.text == uncached(original)[0].text and cached.last_timings["cache_n"] > 0
