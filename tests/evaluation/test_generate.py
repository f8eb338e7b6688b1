"""Question-set generation: cloze, the LLM path and its fallbacks, unanswerable and forbidden items."""
from __future__ import annotations

import json

from bastion.core.errors import GenerationError
from bastion.core.types import Principal
from bastion.evaluation.generate import (
    FAKE_NAMES,
    FAKE_NUMBERS,
    FAKE_TITLES,
    SourcePassage,
    generate_items,
    normalise,
    pick_forbidden,
)
from bastion.generation.protocol import ChatMessage
from bastion.testing.fake_llm import ScriptedLLM

TRAVEL = SourcePassage(
    "d1", "policies/travel.md",
    "# Travel\nThe hotel cap in Paris is €180 per night. Employees book flights through Acme Travel "
    "at least 14 days before departure. Expense reports are due by March 3, 2025.\n- Receipts are required.",
    frozenset({"group:staff"}),
)
LEAVE = SourcePassage(
    "d2", "hr/leave.md",
    "Every employee gets 25 days of paid leave per calendar year. Requests go to the Lisbon office "
    "at least 10 working days ahead.",
    frozenset({"everyone"}),
)
ZH = SourcePassage(
    "d3", "制度/差旅.md",
    "员工出差住宿标准为每晚 500 元。报销须在出差结束后 30 天内提交，详见《差旅管理办法》。",
    frozenset({"group:finance", "user:carol"}),
)
CORPUS = [TRAVEL, LEAVE, ZH]


def _sentence_of(messages: list[ChatMessage]) -> str:
    user = messages[-1].content
    return user.split("：", 1)[1] if user.startswith("句子") else user.split(": ", 1)[1]


def _check_answerable(item, passage: SourcePassage) -> None:
    assert item.document == passage.path
    assert item.sentence and item.sentence in passage.text
    assert item.answers and all(normalise(a) in normalise(item.sentence) for a in item.answers)
    assert all(normalise(a) not in normalise(item.question) for a in item.answers)


def test_cloze_english():
    result = generate_items([TRAVEL], count=3, asker="alice")
    assert len(result.items) == 3
    for item in result.items:
        assert item.kind == "answerable" and item.asker == "alice"
        assert item.question.startswith('Complete from the sources: "') and "____" in item.question
        assert item.meta == {"generator": "cloze", "doc_id": "d1"}
        _check_answerable(item, TRAVEL)
        # the blank is exactly where the answer was
        assert item.question.split('"')[1].replace("____", item.answers[0]) == item.sentence
    assert result.notes[0] == "answerable: 3 of 3 requested"


def test_cloze_chinese():
    result = generate_items([ZH], count=2, asker=None)
    assert len(result.items) == 2
    for item in result.items:
        assert item.question.startswith("根据资料填空：“") and "____" in item.question
        _check_answerable(item, ZH)
    assert {s for item in result.items for s in item.answers} <= {"500", "30", "差旅管理办法"}


def test_a_span_that_occurs_twice_is_never_blanked():
    p = SourcePassage("d9", "x.md", "The 12 teams met 12 times in Berlin during the long project.", frozenset({"everyone"}))
    items = generate_items([p], count=5, asker=None).items
    assert [i.answers for i in items] == [["Berlin"]]


def test_deterministic_for_a_seed_and_spread_over_documents():
    one = generate_items(CORPUS, count=4, asker="a", seed=7, unanswerable=2)
    two = generate_items(list(reversed(CORPUS)), count=4, asker="a", seed=7, unanswerable=2)
    assert [i.to_dict() for i in one.items] == [i.to_dict() for i in two.items]
    assert {i.document for i in one.items[:3]} == {p.path for p in CORPUS}  # one per document first


def test_llm_question_accepted():
    def script(messages):
        sentence = _sentence_of(messages)
        if "Paris" in sentence:
            return json.dumps({"question": "What is the nightly hotel cap in Paris?", "answer": "€180"})
        return json.dumps({"question": "What is asked?", "answer": sentence.split()[2]})

    llm = ScriptedLLM(script)
    result = generate_items([TRAVEL], count=3, asker="alice", llm=llm)
    paris = next(i for i in result.items if "Paris" in (i.sentence or ""))
    assert paris.question == "What is the nightly hotel cap in Paris?" and paris.answers == ["€180"]
    assert paris.meta["generator"] == "llm" and paris.meta["model"] == "scripted"
    messages, params = llm.calls[0]
    assert params.temperature == 0.0 and params.seed == 0 and params.max_tokens <= 128
    assert "JSON" in messages[0].content
    assert "llm: 0 of 3 questions fell back to cloze" in result.notes


def test_llm_prompt_in_chinese_for_chinese_sentences():
    llm = ScriptedLLM(json.dumps({"question": "住宿标准每晚多少元？", "answer": "500 元"}))
    result = generate_items([ZH], count=2, asker=None, llm=llm)
    assert all(m[0].content.startswith("你根据") for m, _ in llm.calls)
    accepted = [i for i in result.items if i.meta["generator"] == "llm"]
    assert [i.answers for i in accepted] == [["500 元"]]


def test_llm_falls_back_to_cloze():
    replies = {
        "Paris": json.dumps({"question": "What is the cap?", "answer": "€250"}),  # not in the sentence
        "Acme": "Sure! Here is a question: what?",  # no JSON
        "March": json.dumps({"question": "Are reports due by March 3, 2025?", "answer": "March 3, 2025"}),
    }
    llm = ScriptedLLM(lambda m: next(v for k, v in replies.items() if k in _sentence_of(m)))
    result = generate_items([TRAVEL], count=3, asker=None, llm=llm)
    assert [i.meta["generator"] for i in result.items] == ["cloze"] * 3
    for item in result.items:
        _check_answerable(item, TRAVEL)
    assert ("llm: 3 of 3 questions fell back to cloze (answer not in the sentence: 1, bad JSON: 1, "
            "question contains the answer: 1)") in result.notes


def test_llm_error_falls_back_and_never_aborts():
    llm = ScriptedLLM(fail=GenerationError("llama-server at 127.0.0.1:8080 is down"))
    result = generate_items(CORPUS, count=5, asker=None, llm=llm)
    assert len(result.items) == 5 and all(i.meta["generator"] == "cloze" for i in result.items)
    assert len(llm.calls) == 3  # a model that keeps failing is not asked again
    assert any(n.startswith("llm: 5 of 5 questions fell back") for n in result.notes)


def test_unanswerable_substitutes_appear_in_no_passage():
    result = generate_items(CORPUS, count=2, asker="alice", unanswerable=4, seed=3)
    unanswerable = [i for i in result.items if i.kind == "unanswerable"]
    assert len(unanswerable) == 4
    for item in unanswerable:
        assert item.answers == [] and item.document is None and item.sentence is None
        assert item.asker == "alice" and item.meta["from"] in {p.path for p in CORPUS}
        fake = item.meta["substitute"]
        assert fake in item.question and item.meta["replaced"] not in item.question
        assert fake in FAKE_NAMES + FAKE_TITLES or any(n in fake for n in FAKE_NUMBERS)
        assert not any(fake.casefold() in p.text.casefold() for p in CORPUS)


def test_unanswerable_avoids_substitutes_found_in_the_corpus():
    taken = " ".join(FAKE_NAMES[:-1])
    p = SourcePassage("d1", "a.md", f"The office in Berlin opens at 9:00 every weekday. {taken}.", frozenset({"everyone"}))
    items = generate_items([p], count=0, asker=None, unanswerable=1, seed=0).items
    assert len(items) == 1
    assert items[0].meta["substitute"] in {FAKE_NAMES[-1]} | {f for f in FAKE_NUMBERS}


def test_unanswerable_with_llm_rewrites_the_model_question():
    llm = ScriptedLLM(json.dumps({"question": "What is the nightly hotel cap in Paris?", "answer": "€180"}))
    p = SourcePassage("d1", "t.md", "The hotel cap in Paris is €180 per night.", frozenset({"everyone"}))
    item = generate_items([p], count=0, asker=None, llm=llm, unanswerable=1).items[0]
    assert item.question == "What is the nightly hotel cap in " + item.meta["substitute"] + "?"
    assert item.meta["generator"] == "llm"


def test_fewer_unanswerable_when_no_sentence_has_a_second_fact():
    p = SourcePassage("d1", "a.md", "Every employee gets 25 days of paid leave per calendar year.", frozenset({"everyone"}))
    result = generate_items([p], count=1, asker=None, unanswerable=2)
    assert [i.kind for i in result.items] == ["answerable"]
    assert any(n.startswith("unanswerable: 0 of 2 requested") for n in result.notes)


def test_pick_forbidden_only_for_users_who_cannot_read():
    users = {"alice": Principal("alice", frozenset({"staff"})), "bob": Principal("bob"),
             "carol": Principal("carol", frozenset({"finance"}))}
    pairs = pick_forbidden(CORPUS, users, 10, seed=1)
    assert pairs and all(not users[u].can_read(p.acl) for u, p in pairs)
    assert {(u, p.doc_id) for u, p in pairs} == {("bob", "d1"), ("carol", "d1"), ("alice", "d3"), ("bob", "d3")}
    assert {p.doc_id for _, p in pairs[:2]} == {"d1", "d3"}  # spread over documents
    assert pick_forbidden(CORPUS, users, 1, seed=1) == pairs[:1]
    assert pick_forbidden([LEAVE], users, 5) == []


def test_forbidden_items_and_the_set_acl():
    result = generate_items([LEAVE], count=1, asker="alice", forbidden=[("bob", TRAVEL), ("alice", ZH)])
    forbidden = [i for i in result.items if i.kind == "forbidden"]
    assert [i.asker for i in forbidden] == ["bob", "alice"]
    _check_answerable(forbidden[0], TRAVEL)
    _check_answerable(forbidden[1], ZH)
    assert result.acl == [["everyone"], ["group:finance", "user:carol"], ["group:staff"]]


def test_count_larger_than_possible_gives_fewer_and_a_note():
    seen: list[tuple[int, int]] = []
    result = generate_items([LEAVE], count=10, asker=None, progress=lambda i, t: seen.append((i, t)))
    assert len(result.items) == 2
    assert result.notes[0] == "answerable: 2 of 10 requested; the sources hold only 2 suitable sentences"
    assert seen[-1] == (10, 10) and [i for i, _ in seen] == sorted(i for i, _ in seen)


def test_nothing_usable():
    p = SourcePassage("d1", "a.md", "# Title\nno facts here at all.", frozenset({"everyone"}))
    result = generate_items([p], count=3, asker=None, forbidden=[("bob", p)])
    assert result.items == [] and result.acl == []
    assert "forbidden: no suitable sentence in a.md; skipped" in result.notes


def test_markup_and_capitals_after_a_full_stop_are_not_facts():
    p = SourcePassage("d1", "m.md", "1. **Clean the taper.** Wipe the interface with a cloth for 20 seconds.\n"
                      "人民币4,120万元，其中 NW-5000 型号占六成。", frozenset({"everyone"}))
    items = generate_items([p], count=5, asker=None).items
    assert sorted(a for i in items for a in i.answers) == ["20", "4,120"]
    assert all("**" not in i.question and "1." not in i.question for i in items)
