"""The answering pipeline on fakes: checks, abstention, fallback, cache keys, lineage, access control."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from bastion.core.errors import LLMUnavailable
from bastion.generation.prompting import ABSTAIN_MESSAGES
from bastion.testing.fake_llm import ScriptedLLM
from tests.conftest import write

HOTEL = "Employees travelling to Shanghai may spend at most 800 CNY per night on hotels. Flights under six hours are economy."
REVENUE = "Revenue in the third quarter of 2026 was 48 million euros, up nine percent on the year before."
LEAVE = "Full-time staff receive 25 days of paid annual leave per year, plus public holidays."


@pytest.fixture
def ws(make_ws, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "travel.md", f"# Travel\n\n{HOTEL}\n")
    write(docs / "leave.md", f"# Leave\n\n{LEAVE}\n")
    write(docs / "finance" / "q3.md", f"# Q3 results\n\n{REVENUE}\n")
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    w = make_ws(docs)
    w.sync()
    w.config.answer.min_evidence = w.config.answer.min_evidence_zh = -1.0  # hash embedder: not calibrated
    return w


def cite_source_with(word: str):
    """A model that answers with the sentence of the source containing ``word``, citing it."""
    def script(messages):
        user = messages[-1].content
        for m in re.finditer(r"^\[(\d+)\] [^:]*: (.*)$", user, re.M):
            if word in m.group(2):
                sentence = next(s for s in re.split(r"(?<=\.) ", m.group(2)) if word in s)
                return f"{sentence.rstrip('.')} [{m.group(1)}]."
        return "NOT_IN_SOURCES"
    return script


def test_grounded_answer_cites_the_authorised_document_and_leaves_lineage(ws):
    ws.use_llm(ScriptedLLM(cite_source_with("800 CNY")))
    a = ws.ask("What is the hotel limit per night in Shanghai?", ws.principal("bob"))
    assert a.decision == "answered" and a.grounded and not a.abstained
    assert "800 CNY" in a.answer and a.citations[0].path == "travel.md"
    assert "800 CNY" in a.citations[0].quote
    rec = ws.lineage(a.lineage_id)
    assert rec["decision"] == "answered" and rec["user_id"] == "bob"
    assert rec["model"]["id"] == "scripted" and rec["prompt"]["template"] == "grounded-qa"
    assert rec["decoding"]["temperature"] == 0.0 and rec["decoding"]["seed"] == 42
    hit = next(h for h in rec["retrieval"]["hits"] if h["path"] == "travel.md")
    assert len(hit["content_hash"]) == 64 and hit["version_id"]
    assert {"retrieve", "prompt", "first_token", "total"} <= set(rec["timings_ms"])
    assert rec["tokens"]["prompt"] > 0


def test_user_who_may_not_read_the_document_gets_the_abstention_and_no_chunk_of_it(ws):
    llm = ScriptedLLM(cite_source_with("48 million"))
    ws.use_llm(llm)
    alice = ws.ask("What was the revenue in the third quarter of 2026?", ws.principal("alice"))
    assert alice.decision == "answered" and alice.citations[0].path == "finance/q3.md"  # positive control
    bob = ws.ask("What was the revenue in the third quarter of 2026?", ws.principal("bob"))
    assert bob.abstained and bob.answer == ABSTAIN_MESSAGES["en"]
    rec = ws.lineage(bob.lineage_id)
    assert all(not h["path"].startswith("finance/") for h in rec["retrieval"]["hits"])
    assert "48 million" not in "".join(m.content for m in llm.calls[-1][0])  # never shown to the model


def test_citation_of_a_passage_that_was_not_retrieved_is_removed_and_falls_back_to_quotes(ws):
    ws.use_llm(ScriptedLLM("Employees may spend at most 800 CNY per night on hotels in Shanghai [9]."))
    a = ws.ask("What is the hotel limit per night in Shanghai?", ws.principal("bob"))
    assert a.decision == "extracted" and a.invalid_citations == 1
    assert "not grounded" in a.reason
    assert a.citations and all(c.quote in a.answer for c in a.citations)  # verbatim quotes, cited
    assert ws.lineage(a.lineage_id)["raw_answer"].endswith("[9].")


def test_model_that_says_not_in_sources_abstains_in_the_question_language(ws):
    ws.use_llm(ScriptedLLM("NOT_IN_SOURCES"))
    a = ws.ask("上海出差酒店每晚的标准是多少？", ws.principal("bob"))
    assert a.abstained and a.answer == ABSTAIN_MESSAGES["zh"] and a.language == "zh"
    assert "found no answer" in a.reason


def test_chinese_question_gets_the_chinese_prompt(ws):
    llm = ScriptedLLM("NOT_IN_SOURCES")
    ws.use_llm(llm)
    ws.ask("年假有多少天？", ws.principal("bob"))
    system = llm.calls[-1][0][0].content
    assert "用中文回答" in system


def test_weak_evidence_abstains_without_calling_the_model(ws):
    llm = ScriptedLLM("should not be called")
    ws.use_llm(llm)
    ws.config.answer.min_evidence = 1.999
    a = ws.ask("Who won the football world cup in 2022?", ws.principal("bob"))
    assert a.abstained and "weak evidence" in a.reason and llm.calls == []


def test_failed_or_missing_llm_falls_back_to_extract(ws):
    ws.use_llm(ScriptedLLM(fail=LLMUnavailable("server at http://127.0.0.1:9 is down")))
    a = ws.ask("What is the hotel limit per night in Shanghai?", ws.principal("bob"))
    assert a.decision == "extracted" and "LLM failed" in a.reason and "800 CNY" in a.answer
    ws.use_llm(None)  # nothing configured: llm.model names a model that was never pulled
    ws.config.llm.model = "not-pulled"
    a = ws.ask("What is the hotel limit per night in Shanghai?", ws.principal("bob"))
    assert a.decision == "extracted" and "no LLM available" in a.reason


def test_extract_mode_uses_no_llm_and_quotes_verbatim(ws):
    llm = ScriptedLLM("unused")
    ws.use_llm(llm)
    a = ws.ask("How many days of paid annual leave do staff get?", ws.principal("bob"), mode="extract")
    assert a.decision == "extracted" and llm.calls == []
    assert "25 days of paid annual leave" in a.answer and a.citations[0].path == "leave.md"
    assert a.citations[0].quote in LEAVE


def test_same_question_same_evidence_is_answered_once_then_from_the_cache(ws):
    llm = ScriptedLLM(cite_source_with("800 CNY"))
    ws.use_llm(llm)
    q = "What is the hotel limit per night in Shanghai?"
    first = ws.ask(q, ws.principal("bob"))
    second = ws.ask(q, ws.principal("bob"))
    assert len(llm.calls) == 1 and second.cached and second.answer == first.answer
    assert second.lineage_id != first.lineage_id  # every answer is traced, cached or not
    assert ws.lineage(second.lineage_id)["cache_key"] == ws.lineage(first.lineage_id)["cache_key"]


def test_changed_document_or_permission_changes_the_cache_key(ws, tmp_path):
    llm = ScriptedLLM(cite_source_with("CNY"))
    ws.use_llm(llm)
    q = "What is the hotel limit per night in Shanghai?"
    key = lambda a: ws.lineage(a.lineage_id)["cache_key"]  # noqa: E731
    k1 = key(ws.ask(q, ws.principal("bob")))
    write(tmp_path / "docs" / "travel.md", "# Travel\n\n" + HOTEL.replace("800", "900") + "\n")
    ws.sync()
    a2 = ws.ask(q, ws.principal("bob"))
    assert key(a2) != k1 and "900 CNY" in a2.answer and not a2.cached
    # every document becomes finance-only: bob loses the evidence, alice keeps it
    write(tmp_path / "docs" / ".bastion-acl", "group:finance\n")
    ws.sync()
    a3 = ws.ask(q, ws.principal("bob"))
    assert a3.abstained and not a3.cached
    assert all(h["path"] != "travel.md" for h in ws.lineage(a3.lineage_id)["retrieval"]["hits"])
    a4 = ws.ask(q, ws.principal("alice"))  # positive control
    assert a4.citations[0].path == "travel.md" and key(a4) != key(a2)


def test_lineage_is_append_only(ws):
    ws.use_llm(ScriptedLLM("NOT_IN_SOURCES"))
    a = ws.ask("What is the hotel limit?", ws.principal("bob"))
    with pytest.raises(Exception, match="append-only"):
        with ws.catalog.session() as s:
            s.execute(text("UPDATE answer_lineage SET decision = 'answered' WHERE id = :i"), {"i": a.lineage_id})
    with pytest.raises(Exception, match="append-only"):
        with ws.catalog.session() as s:
            s.execute(text("DELETE FROM answer_lineage"))
    assert ws.lineage(a.lineage_id)["decision"] == "abstained"


def test_follow_up_is_rewritten_before_retrieval(ws):
    from bastion.generation.protocol import ChatMessage

    def script(messages):
        if "Standalone question" in messages[-1].content:
            return "How many days of paid annual leave do full-time staff get?"
        return cite_source_with("25 days")(messages)

    ws.use_llm(ScriptedLLM(script))
    history = [ChatMessage("user", "Tell me about annual leave."), ChatMessage("assistant", "It is in the HR policy.")]
    a = ws.ask("And how many days is it?", ws.principal("bob"), history=history)
    assert a.rewritten_question == "How many days of paid annual leave do full-time staff get?"
    assert a.decision == "answered" and a.citations[0].path == "leave.md"
    assert ws.lineage(a.lineage_id)["rewritten_question"] == a.rewritten_question


def test_budget_keeps_the_prompt_inside_a_small_context_window(ws, tmp_path):
    long = " ".join(f"Parking rule {i} says cars park in zone {i % 7}." for i in range(300))
    write(tmp_path / "docs" / "parking.md", f"# Parking\n\n{long} The hotel limit in Shanghai is 800 CNY per night.\n")
    ws.sync()
    llm = ScriptedLLM("NOT_IN_SOURCES", context_window=600)
    ws.use_llm(llm)
    ws.ask("What is the hotel limit per night in Shanghai?", ws.principal("bob"))
    messages, params = llm.calls[-1]
    prompt_tokens = sum(llm.count_tokens(m.content) for m in messages)
    assert prompt_tokens + params.max_tokens <= 600 and "800 CNY" in messages[-1].content


def test_bad_questions_get_clear_errors(ws):
    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError, match="empty"):
        ws.ask("   ", ws.principal("bob"))
    with pytest.raises(ConfigError, match="limit"):
        ws.ask("x" * 5000, ws.principal("bob"))
    with pytest.raises(TypeError):
        ws.ask("hotel?", "bob")
