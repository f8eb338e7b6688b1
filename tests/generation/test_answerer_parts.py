"""The Answerer on its own collaborators (no Workspace), the typed assistant and the lineage readers."""
from __future__ import annotations

import pytest

from bastion import lineage
from bastion.catalog.db import Catalog
from bastion.core.config import AnswerConfig, LLMConfig
from bastion.core.types import Hit, Principal
from bastion.generation.answer import Answerer, Assistant
from bastion.generation.prompting import load_template
from bastion.generation.records import AnswerRecords
from bastion.generation.results import Answer, Citation
from bastion.testing.fake_llm import ScriptedLLM
from bastion.testing.fakes import HashEmbedder

HOTEL = "Employees travelling to Shanghai may spend at most 800 CNY per night on hotels."


def _hit(text: str) -> Hit:
    return Hit(chunk_id="c1", doc_id="d1", document="Travel", path="travel.md", source="docs", page=None,
               section=None, score=1.0, text=text, char_start=0, char_end=len(text), version_id="v1")


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield cat
    cat.close()


def _answerer(catalog: Catalog, llm: ScriptedLLM | None, hits: list[Hit], searches: list, warnings: list):
    def search(query, principal, k=None, *, source=None):
        searches.append((query, principal.user_id, k, source))
        return hits

    def warnings_for(doc_ids):
        warnings.append(doc_ids)
        return [{"source": "docs", "kind": "freshness", "alert_id": 1, "message": "stale"}]

    cfg = AnswerConfig(min_evidence=-1.0, min_evidence_zh=-1.0)
    embedder = HashEmbedder()
    return Answerer(load_template(cfg.prompt), cfg, LLMConfig(), (lambda: llm) if llm else None,
                    search=search, embedder=lambda: embedder, records=AnswerRecords(catalog),
                    warnings_for=warnings_for)


def test_answerer_runs_on_plain_collaborators_and_writes_lineage(catalog):
    searches, warnings = [], []
    llm = ScriptedLLM("Employees may spend at most 800 CNY per night on hotels in Shanghai [1].")
    answerer = _answerer(catalog, llm, [_hit(HOTEL)], searches, warnings)
    bob = Principal("bob", frozenset({"staff"}))
    a = answerer.ask("What is the hotel limit per night in Shanghai?", bob, source=["docs"])
    assert a.decision == "answered" and a.citations[0].chunk_id == "c1" and a.model == "scripted"
    assert searches == [("What is the hotel limit per night in Shanghai?", "bob", 5, ["docs"])]
    assert warnings == [["d1"]] and a.warnings[0]["kind"] == "freshness"
    rec = lineage.read(catalog, a.lineage_id)
    assert rec["user_id"] == "bob" and rec["principal"] == sorted(bob.labels())
    assert rec["retrieval"]["source"] == ["docs"] and rec["retrieval"]["hits"][0]["content_hash"] is None
    assert rec["created_at"].endswith("Z") and rec["warnings"] == a.warnings
    again = answerer.ask("What is the hotel limit per night in Shanghai?", bob, source=["docs"])
    assert again.cached and len(llm.calls) == 1 and again.lineage_id != a.lineage_id
    assert [r["id"] for r in lineage.recent(catalog, user_id="bob")] == [again.lineage_id, a.lineage_id]
    assert lineage.recent(catalog, user_id="alice") == []


def test_no_hits_abstains_without_calling_the_llm(catalog):
    answerer = _answerer(catalog, None, [], [], [])
    a = answerer.ask("What is the hotel limit?", Principal("bob"))
    assert a.decision == "abstained" and a.reason == "no authorised passage matched the question"
    assert not a.grounded and a.citations == []
    assert lineage.read(catalog, a.lineage_id)["decision"] == "abstained"


def test_without_llm_the_answer_is_verbatim_quotes(catalog):
    answerer = _answerer(catalog, None, [_hit(HOTEL)], [], [])
    a = answerer.ask("What is the hotel limit per night in Shanghai?", Principal("bob"))
    assert a.decision == "extracted" and "no LLM available" in a.reason
    assert a.citations[0].n == 1 and a.citations[0].quote in a.answer


def test_answer_round_trips_through_its_dict():
    cite = Citation(n=1, chunk_id="c", document="D", path="d.md", page=2, quote="q", doc_id="d", version_id="v")
    ans = Answer(answer="A [1].", abstained=False, decision="answered", reason=None, citations=[cite],
                 lineage_id="l", question="Q?", rewritten_question=None, language="en", mode="answer",
                 grounded=True, timings_ms={"total": 1.0})
    assert Answer.from_dict(ans.to_dict()) == ans


def test_answerer_for_gives_a_typed_assistant(make_ws):
    ws = make_ws()
    assistant = ws.answerer_for("bastion")
    assert isinstance(assistant, Assistant) and isinstance(assistant.answerer, Answerer)
    assert assistant.sources is None and ws.answerer_for("bastion") is assistant


def test_lineage_list_is_newest_first_and_filters_by_user(make_ws):
    ws = make_ws()
    ws.use_llm(ScriptedLLM("NOT_IN_SOURCES"))
    first = ws.ask("What is the hotel limit?", ws.principal("bob"))
    second = ws.ask("What is the leave policy?", ws.principal("alice"))
    rows = ws.lineage_list()
    assert [r["id"] for r in rows] == [second.lineage_id, first.lineage_id]
    assert set(rows[0]) == {"id", "created_at", "user_id", "question", "decision"}
    assert [r["id"] for r in ws.lineage_list(user_id="bob")] == [first.lineage_id]
    assert ws.lineage(first.lineage_id)["created_at"] == rows[1]["created_at"]
