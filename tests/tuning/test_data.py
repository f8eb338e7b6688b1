"""Tuning datasets: examples in the product's prompt format that never hold text the audience may
not read, cleaning (personal data, duplicates, quality), the split and the stored card."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from sqlalchemy import select

from bastion.catalog.models import DocumentRow
from bastion.core.errors import ConfigError
from bastion.generation.citations import check_answer
from bastion.generation.prompting import NOT_FOUND, load_template
from bastion.testing import HashEmbedder
from bastion.tuning.clean import CleanReport, clean, scrub, split_by_document
from bastion.tuning.data import (
    Example,
    approx_tokens,
    from_feedback,
    from_file,
    from_question_set,
    grounded_from_corpus,
)
from bastion.tuning.datasets import TuneDatasets
from bastion.workspace import Workspace
from tests.conftest import write

OPEN = {
    "travel.md": "# Travel\n\nEmployees travelling to Shanghai may spend at most 800 CNY per night on hotels. "
                 "Taxi receipts must be filed within 30 days of the trip. "
                 "The travel desk in Berlin books all flights longer than 6 hours.\n",
    "leave.md": "# Leave\n\nFull-time staff receive 25 days of paid annual leave per year. "
                "Parents may take 14 weeks of parental leave. "
                "Unused leave expires on 31 March of the following year.\n",
    "office.md": "# Office\n\nThe Lisbon office opens at 8 in the morning on weekdays. "
                 "Visitors must register at reception in Building 4 before entering. "
                 "The canteen serves lunch until 14:30 every working day.\n",
    "zh/leave.md": "# 假期\n\n公司规定，员工每年享有15天带薪年假。报销申请必须在30天内提交给财务部门。\n",
}
FINANCE = {
    "finance/q3.md": "# Q3 results\n\nRevenue in the third quarter of 2026 was 48 million euros. "
                     "Operating margin reached 17 percent in the quarter. "
                     "The board approved a dividend of 2 euros per share.\n",
    "finance/budget.md": "# Budget\n\nThe marketing budget for 2027 is set at 3 million euros. "
                         "Capital spending in Warsaw will rise to 9 million euros.\n",
}
HR_SENTENCES = [
    "The salary band for engineers at Quillstone tops out at 135000 euros.",
    "Bonuses for Quillstone managers are capped at 22 percent.",
    "Severance at Quillstone equals 3 months of pay per year of service.",
    "The Quillstone pension match is 7 percent of base salary.",
]
HR = {
    "hr/salaries.md": f"# Salaries\n\n{HR_SENTENCES[0]} {HR_SENTENCES[1]}\n",
    "hr/severance.md": f"# Severance\n\n{HR_SENTENCES[2]} {HR_SENTENCES[3]}\n",
}
_PASSAGE = re.compile(r"^\[(\d+)\] [^:：]*[:：] ?(.*)$", re.M)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    docs = root / "docs"
    for path, text in {**OPEN, **FINANCE, **HR}.items():
        write(docs / path, text)
    write(docs / "finance" / ".bastion-acl", "group:finance\n")
    write(docs / "hr" / ".bastion-acl", "group:hr\n")
    write(root / "secret" / "plans.md", "# Plans\n\nThe Oslo site closes in 2028 after 12 years.\n")
    Workspace.init(root / "ws")
    w = Workspace.open(root / "ws", embedder=HashEmbedder())
    w.directory.add_user("alice", groups=["finance", "staff"])
    w.directory.add_user("bob", groups=["staff"])
    w.sources.add_folder("docs", docs, acl="everyone")
    w.sources.add_folder("secret", root / "secret", acl="group:hr")
    w.sync()
    return w


def passages_of(example: Example) -> dict[int, str]:
    """The numbered passages of the example's last user message, as the model sees them."""
    user = next(m["content"] for m in reversed(example.messages) if m["role"] == "user")
    return {int(n): text for n, text in _PASSAGE.findall(user)}


def gold_sentence(example: Example) -> str:
    """The cloze question's sentence with its blank filled in."""
    frame = re.search(r"[\"“](.*)[\"”]", example.meta["question"]).group(1)
    return frame.replace("____", example.meta["answer"])


def all_text(examples: list[Example]) -> str:
    return "\n".join(m["content"] for e in examples for m in e.messages)


def catalog_acl(ws) -> dict[str, list[str]]:
    with ws.catalog.session() as s:
        return {d.id: sorted(d.acl or []) for d in s.scalars(select(DocumentRow))}


# -- the guard on the corpus ---------------------------------------------------------------------
def test_finance_audience_learns_finance_and_open_documents_never_hr(ws):
    examples, stats = grounded_from_corpus(ws, "docs", ["group:finance"], count=60, negatives=0.3, seed=1)
    assert examples and stats.dropped_acl == len(HR)
    text = all_text(examples)
    for sentence in HR_SENTENCES:  # denial: no HR passage in any prompt, question or target
        assert sentence not in text
    assert "Quillstone" not in text and "135000" not in text
    assert "48 million euros" in text and "Operating margin" in text  # positive control: finance text is there
    assert "25 days of paid annual leave" in text  # and open text
    acl = catalog_acl(ws)
    for e in examples:
        assert e.origin == "corpus:docs"
        for d in e.documents:
            assert d["acl"] == acl[d["doc_id"]] and ("everyone" in d["acl"] or "group:finance" in d["acl"])
            assert not d["path"].startswith("hr/")
    paths = {d["path"] for e in examples for d in e.documents}
    assert any(p.startswith("finance/") for p in paths) and "travel.md" in paths


def test_everyone_audience_learns_only_open_documents(ws):
    examples, stats = grounded_from_corpus(ws, "docs", ["everyone"], count=60, seed=2)
    assert examples and stats.dropped_acl == len(FINANCE) + len(HR)
    text = all_text(examples)
    assert "48 million euros" not in text and "Warsaw" not in text and "Quillstone" not in text
    assert all(d["acl"] == ["everyone"] for e in examples for d in e.documents)
    assert "Lisbon" in text


def test_multi_label_audience_needs_documents_both_may_read(ws):
    examples, _ = grounded_from_corpus(ws, "docs", ["group:finance", "group:hr"], count=40, seed=3)
    text = all_text(examples)
    assert "Quillstone" not in text and "48 million" not in text  # each group's documents are the other's secret
    assert all("everyone" in d["acl"] for e in examples for d in e.documents)


def test_an_audience_that_may_read_nothing_is_told_which_acls_exist(ws):
    with pytest.raises(ConfigError, match=r"group:hr"):
        grounded_from_corpus(ws, "secret", ["group:finance"], count=5)


# -- targets -----------------------------------------------------------------------------------
def test_grounded_targets_pass_the_product_checks_and_negatives_abstain(ws):
    examples, stats = grounded_from_corpus(ws, "docs", ["group:finance"], count=60, negatives=0.4, seed=4)
    kinds = Counter(e.kind for e in examples)
    assert kinds["grounded"] and kinds["abstain"] and stats.dropped_check == 0
    chunk_doc = {r["chunk_id"]: r["doc_id"] for r in ws.store.rows_for(sorted(catalog_acl(ws)))}
    for e in examples:
        passages = passages_of(e)
        assert list(passages) == list(range(1, len(passages) + 1))
        if e.kind == "grounded":
            checked = check_answer(e.target, passages)
            assert checked.grounded and checked.cited == [e.meta["gold"]], e.target
            assert gold_sentence(e).rstrip(".") in passages[e.meta["gold"]]
            assert chunk_doc[e.meta["chunks"][e.meta["gold"] - 1]] == e.group
        else:
            assert e.target == NOT_FOUND
            assert all(chunk_doc[c] != e.group for c in e.meta["chunks"])  # no chunk of the gold document
            assert all(gold_sentence(e) not in p for p in passages.values())
            assert e.group in {d["doc_id"] for d in e.documents}  # the question quotes it: it is listed


def test_examples_use_the_workspace_prompt_and_both_languages(ws):
    examples, _ = grounded_from_corpus(ws, "docs", ["everyone"], count=60, seed=5)
    template = load_template("grounded-qa")
    by_lang = {e.lang: e for e in examples}
    assert set(by_lang) == {"en", "zh"}
    for lang, e in by_lang.items():
        assert e.messages[0] == {"role": "system", "content": template.messages("q", [], lang)[0].content}
        assert [m["role"] for m in e.messages] == ["system", "user", "assistant"]
    zh = [e for e in examples if e.lang == "zh" and e.kind == "grounded"]
    assert zh and all(re.search(r"\[\d\]。$", e.target) for e in zh)


# -- question sets and feedback ------------------------------------------------------------------
def test_question_set_examples_respect_the_set_acl(ws):
    ws.evaluation.generate_set("tune-gen", "docs", 8, asker="alice", unanswerable=2, use_llm=False)
    examples, stats = from_question_set(ws, "tune-gen", ["group:finance"], seed=1)
    assert examples and stats.built == len(examples)
    assert {e.origin for e in examples} == {"set:tune-gen@1"}
    assert "Quillstone" not in all_text(examples)
    for e in examples:
        if e.kind == "grounded":
            assert check_answer(e.target, passages_of(e)).grounded
        else:
            assert e.target == NOT_FOUND
    set_acl = ws.evaluation.sets.get("tune-gen").acl
    _, everyone = from_question_set(ws, "tune-gen", ["everyone"])
    if any("everyone" not in acl for acl in set_acl):  # the set quotes a finance document
        assert everyone.built == 0 and everyone.dropped_acl == 10


def test_rated_answers_become_examples_only_for_their_askers_audience(ws):
    ws.config.answer.mode = "extract"
    ws.config.answer.min_evidence = ws.config.answer.min_evidence_zh = -1.0  # hash embedder: not calibrated
    try:
        alice = ws.principal("alice")
        a = ws.ask("How many days of paid annual leave do full-time staff receive?", alice)
        ws.documents.add_feedback(alice, a.lineage_id, "up")
        b = ws.ask("What was revenue in the third quarter of 2026?", alice)
        ws.documents.add_feedback(alice, b.lineage_id, "down",
                                  correction="Revenue in the third quarter of 2026 was 48 million euros.")
        c = ws.ask("How long is parental leave?", alice)
        ws.documents.add_feedback(alice, c.lineage_id, "down")  # neither rated up nor corrected: unused
    finally:
        ws.config.answer.mode = "answer"
    # the label-wise rule: an audience of user:alice learns only from documents that name her (or everyone)
    mine, stats = from_feedback(ws, ["user:alice"])
    assert len(mine) == 1 and stats.dropped_acl == 1 and stats.dropped_check == 0
    assert "25 days" in mine[0].target and "48 million" not in all_text(mine)
    # a question is its asker's text: a group audience learns from it only when the caller says so
    group, gstats = from_feedback(ws, ["group:finance"])
    assert group == [] and gstats.dropped_acl == 2
    shared, _ = from_feedback(ws, ["group:finance"], share_questions=True)
    assert len(shared) == 2
    for e in shared:
        assert e.origin == "feedback" and e.kind == "grounded"
        assert check_answer(e.target, passages_of(e)).grounded
    assert any(e.target.startswith("Revenue in the third quarter of 2026 was 48 million euros [") for e in shared)
    assert any(e.target.startswith("Full-time staff receive 25 days") for e in shared)  # the extracted quote, cited
    # everyone may not read the finance passages behind the revenue answer
    open_, ostats = from_feedback(ws, ["everyone"], share_questions=True)
    assert len(open_) == 1 and ostats.dropped_acl == 1 and "48 million" not in all_text(open_)


# -- files -----------------------------------------------------------------------------------------
def test_files_in_common_formats(tmp_path):
    f = tmp_path / "extra.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi."}]},
        {"instruction": "Translate", "input": "Hund", "output": "dog"},
        {"prompt": "2+2?", "completion": "4"},
    ]) + "\n", encoding="utf-8")
    examples, stats = from_file(f, ["group:finance"], "extra")
    assert [e.messages[-1]["content"] for e in examples] == ["Hi.", "dog", "4"]
    assert examples[1].messages[0]["content"] == "Translate\n\nHund"
    assert all(e.documents == [] and e.origin == "file:extra" and e.kind == "instruction" for e in examples)
    assert stats.by_kind == {"instruction": 3}


def test_a_file_with_bad_lines_is_refused_whole(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\nnot json\n[1]\n{"messages": [{"role": "user", "content": "x"}]}\n'
                 '{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        from_file(f, ["everyone"])
    msg = str(err.value)
    assert "4 line(s) are invalid" in msg and "line 2: not valid JSON" in msg and "line 5: unknown format" in msg


# -- personal data ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "kind"), [
    ("write to jane.doe+hr@mail.example.co.uk today", "email"),
    ("call +49 30 1234567 now", "phone"),
    ("call +1 (415) 555-2671 now", "phone"),
    ("手机13812345678联系", "phone"),
    ("mobile 138-1234-5678.", "phone"),
    ("office 010-12345678.", "phone"),
    ("IBAN DE89 3704 0044 0532 0130 00.", "iban"),
    ("IBAN GB82WEST12345698765432.", "iban"),
    ("card 4111 1111 1111 1111.", "card"),
    ("card 5500-0055-5555-5559.", "card"),
    ("身份证号11010519491231002X。", "id"),
    ("server 192.168.10.24 is down", "ip"),
])
def test_scrub_replaces_each_kind(text, kind):
    out, found = scrub(text)
    assert found == Counter({kind: 1}), (out, found)
    assert f"[{ {'email': 'EMAIL', 'phone': 'PHONE', 'iban': 'IBAN', 'card': 'CARD', 'id': 'ID', 'ip': 'IP'}[kind]}]" in out


@pytest.mark.parametrize("text", [
    "Revenue grew 12% to 1,234,567 euros in 2026.",
    "The deadline is 2024-01-15, or 15.01.2024, or 2024/01/15.",
    "Upgrade to version 1.2.3 or v2.10.4.1 (release 10.0.0.1).",
    "Order 4111111111111112 failed the Luhn check.",  # 16 digits, not a card
    "ID 110105194912310021 has a wrong check digit.",
    "IBAN DE88 3704 0044 0532 0130 00 fails mod 97.",
    "Pi is 3.14159 and the code is 20240115.",
    "Room 12, floor 3, ISO 27001, 800 CNY, 25 days, 2020-2021.",
    "员工每年享有15天带薪年假，报销须在30天内提交。",
])
def test_scrub_leaves_ordinary_numbers_alone(text):
    assert scrub(text) == (text, Counter())


def chat(question: str, target: str, *, group: str = "g", lang: str = "en", kind: str = "grounded") -> Example:
    return Example(messages=[{"role": "system", "content": "Answer from the sources."},
                             {"role": "user", "content": question},
                             {"role": "assistant", "content": target}],
                   kind=kind, lang=lang, origin="file:t", documents=[], group=group, meta={"question": question})


def test_clean_scrubs_prompts_and_drops_targets_that_held_personal_data():
    examples = [
        chat("Sources: [1] Mail alice@example.com for leave. Question: who approves leave?",
             "The manager approves leave [1]."),
        chat("Sources: [1] The hotline is +44 20 7946 0958. Question: what is the hotline?",
             "The hotline is +44 20 7946 0958 [1]."),
    ]
    kept, report = clean(examples, max_tokens=500, count_tokens=approx_tokens)
    assert len(kept) == 1 and report.dropped["pii_in_target"] == 1
    assert "[EMAIL]" in kept[0].messages[1]["content"] and "alice@" not in kept[0].messages[1]["content"]
    assert "[EMAIL]" in kept[0].meta["question"]
    assert report.pii == {"email": 1} and report.scrubbed_examples == 1


def test_clean_removes_duplicates_and_near_duplicates_and_reports_each_reason():
    base = "Question: how many days of paid annual leave do full-time staff in the Lisbon office receive each year?"
    examples = [
        chat(base, "They receive 25 days [1]."),
        chat(base, "They receive 25 days [1]."),  # exact duplicate
        chat(base.replace("year?", "year!"), "They receive 25 days [1]."),  # near duplicate
        chat("Question: what is the hotel cap in Shanghai per night for employees?", "800 CNY [1]."),
        chat("Question: 多少天年假？", "15天[1]。", lang="zh"),  # another language
        chat("Question: garbled \x00\x01\x02\x03 text", "x [1]."),
        chat("Question: " + "long " * 400, "y [1]."),
        chat("Question: empty target?", " "),
    ]
    kept, report = clean(examples, max_tokens=300, count_tokens=approx_tokens, languages={"en"})
    assert [e.target for e in kept] == ["They receive 25 days [1].", "800 CNY [1]."]
    assert {k: v for k, v in report.dropped.items() if v} == {
        "exact_duplicate": 1, "near_duplicate": 1, "language": 1, "garbled": 1, "too_long": 1, "empty": 1}
    d = report.to_dict()
    assert d["input"] == 8 and d["kept"] == 2 and d["dropped_total"] == 6
    assert isinstance(report, CleanReport)


def test_near_duplicate_threshold_keeps_different_questions():
    examples = [chat(f"Question: what does policy number {n} say about travel to city {c}?", f"Rule {n} [1].")
                for n, c in [(1, "Oslo"), (2, "Rome"), (3, "Lima")]]
    kept, report = clean(examples, max_tokens=500, count_tokens=approx_tokens)
    assert len(kept) == 3 and report.dropped["near_duplicate"] == 0


def test_split_keeps_each_document_on_one_side():
    examples = [chat(f"q{i}", f"a{i} [1].", group=f"doc{i % 7}") for i in range(70)]
    train, val = split_by_document(examples, 0.2, seed=3)
    assert len(train) + len(val) == 70 and val and train
    assert not {e.group for e in train} & {e.group for e in val}
    assert 0.1 <= len(val) / 70 <= 0.3
    assert split_by_document(examples, 0.2, seed=3) == (train, val)  # seeded
    one_doc = [chat(f"q{i}", "a [1].", group="only") for i in range(5)]
    assert split_by_document(one_doc, 0.5) == (one_doc, [])
    with pytest.raises(ConfigError):
        split_by_document(examples, 1.0)


# -- stored datasets -----------------------------------------------------------------------------
def test_build_stores_a_dataset_with_its_card_and_lineage(ws):
    ds = TuneDatasets(ws)
    card = ds.build("fin", source="docs", audience="group:finance", count=40, val_share=0.25, seed=7)
    d = card.to_dict()
    assert d["examples"] == card.train + card.val > 0 and d["dropped_acl"] == len(HR)
    assert "dropped_quality" in d and d["dropped_quality"] == card.clean["dropped_total"]
    assert card.audience == ["group:finance"] and card.origins[0]["kind"] == "corpus"
    assert sum(card.by_kind.values()) == card.examples and set(card.by_lang) <= {"en", "zh"}
    # lineage: every document version used, with the ACL it had
    acl = catalog_acl(ws)
    with ws.catalog.session() as s:
        current = {r.id: r.current_version_id for r in s.scalars(select(DocumentRow))}
    docs = card.lineage["documents"]
    assert docs and all(x["acl"] == acl[x["doc_id"]] and x["version_id"] == current[x["doc_id"]] for x in docs)
    assert not any(x["path"].startswith("hr/") for x in docs)
    used = {(x["doc_id"], x["version_id"]) for split in ("train", "val") for e in ds.examples("fin", split)
            for x in e.documents}
    assert used == {(x["doc_id"], x["version_id"]) for x in docs}
    assert card.lineage["template"]["id"] == "grounded-qa" and card.lineage["seed"] == 7
    # the stored files round-trip and hash to the card
    folder = ws.data_dir / "tuning" / "datasets" / "fin"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "train.jsonl", "val.jsonl"]
    train, val = ds.examples("fin", "train"), ds.examples("fin", "val")
    assert (len(train), len(val)) == (card.train, card.val)
    assert not {e.group for e in train} & {e.group for e in val}
    assert [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()] == [e.to_dict() for e in train]
    assert ds.verify("fin") and ds.get("fin") == card and [c.name for c in ds.list()] == ["fin"]
    assert "Quillstone" not in (folder / "train.jsonl").read_text() + (folder / "val.jsonl").read_text()
    # names are not reused unless asked; removal
    with pytest.raises(ConfigError, match="exists"):
        ds.build("fin", source="docs", audience="group:finance", count=5)
    again = ds.build("fin", source="docs", audience="everyone", count=10, replace=True)
    assert ds.get("fin").audience == ["everyone"] == again.audience
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    ds.remove("fin")
    assert ds.list() == []
    with pytest.raises(ConfigError):
        ds.get("fin")


def test_build_refuses_unacknowledged_files_and_bad_requests(ws, tmp_path):
    ds = TuneDatasets(ws)
    f = tmp_path / "extra.jsonl"
    f.write_text(json.dumps({"prompt": "Greet the user.", "completion": "Hello, how can I help?"}) + "\n",
                 encoding="utf-8")
    with pytest.raises(ConfigError, match="acknowledge"):
        ds.build("with-file", files=[f], audience="everyone")
    card = ds.build("with-file", files=[f], audience="everyone", acknowledge_files=True, val_share=0)
    assert card.examples == 1 and card.origins[0]["kind"] == "file" and card.lineage["documents"] == []
    with pytest.raises(ConfigError, match="nothing to build"):
        ds.build("empty", audience="everyone")
    with pytest.raises(ConfigError, match="audience"):
        ds.build("x", source="docs", audience="")
    with pytest.raises(ConfigError, match="group:hr"):
        ds.build("x", source="secret", audience="group:finance")
    with pytest.raises(ConfigError):
        ds.build("../escape", source="docs", audience="everyone")
    ds.remove("with-file")
