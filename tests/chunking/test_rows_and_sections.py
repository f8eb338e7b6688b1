"""docs/parsing.md's promise, on the evaluation's examples: each table row is a chunk of its own (so
"taxi limit" finds the taxi row alone), and a Markdown document with several ``##`` sections is cut
at them. Documents indexed by an older chunker are re-chunked by the next sync."""
from __future__ import annotations

import io

import pytest

from bastion.chunking import Chunker
from bastion.parsing import parse
from tests.conftest import write

EXPENSES = "category,limit_eur,receipt_required\nhotel,180,yes\nmeals,45,no\ntaxi,60,yes\ntrain,120,yes\n"
HANDBOOK = """# Employee handbook

## Office hours
The office is open from eight to six. Core hours are ten to four.

## Travel
The hotel cap is 180 euro per night. Book trains for trips under four hours.

## Security
Lock your screen when you leave your desk. Report phishing to the security desk.
"""


def words(text: str) -> int:
    return len(text.split())


def _chunks(content: str | bytes, media: str) -> list:
    data = content.encode() if isinstance(content, str) else content
    return Chunker(words, max_tokens=256, overlap_tokens=32).chunk(parse(data, media), "d", "v")


def test_each_csv_row_is_a_chunk_of_its_own():
    chunks = _chunks(EXPENSES, "csv")
    assert [c.section for c in chunks] == ["row 1", "row 2", "row 3", "row 4"]
    assert chunks[2].text == "category = taxi | limit_eur = 60 | receipt_required = yes"


def test_each_xlsx_row_is_a_chunk_of_its_own():
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "limits"
    for row in [line.split(",") for line in EXPENSES.splitlines()]:
        sheet.append(row)
    buf = io.BytesIO()
    book.save(buf)
    chunks = _chunks(buf.getvalue(), "xlsx")
    assert [c.section for c in chunks] == [f"limits row {n}" for n in range(1, 5)]
    assert "taxi" in chunks[2].text and "hotel" not in chunks[2].text


def test_markdown_sections_are_cut_at_their_headings():
    chunks = _chunks(HANDBOOK, "md")
    assert [c.section for c in chunks] == ["Office hours", "Travel", "Security"]
    assert chunks[0].text.startswith("# Employee handbook\n\n## Office hours")  # the title stays with the first
    assert chunks[1].text.startswith("## Travel") and "hotel cap" in chunks[1].text and "screen" not in chunks[1].text


def test_sections_without_headings_are_still_packed():
    text = "\n\n".join(f"Paragraph {i} says one short thing." for i in range(6))
    assert len(_chunks(text, "txt")) == 1


def test_taxi_limit_and_hotel_cap_are_found_as_chunks_of_their_own(make_ws, tmp_path):
    write(tmp_path / "docs" / "expenses.csv", EXPENSES)
    write(tmp_path / "docs" / "handbook.md", HANDBOOK)
    ws = make_ws()
    ws.sync()
    hits = ws.search("taxi limit", ws.principal("bob"), 10, mode="bm25")
    assert (hits[0].path, hits[0].section) == ("expenses.csv", "row 3")
    assert hits[0].text == "category = taxi | limit_eur = 60 | receipt_required = yes"  # the row alone
    travel = ws.search("hotel cap per night", ws.principal("bob"), 10, mode="bm25")[0]
    assert (travel.path, travel.section) == ("handbook.md", "Travel") and "Lock your screen" not in travel.text


def _one_chunk_per_document(self, doc, doc_id, version_id):
    """How the review saw it: a whole small table or handbook in one chunk."""
    from bastion.core.types import Chunk

    text = doc.text
    return [Chunk(chunk_id=f"{version_id}-0", doc_id=doc_id, version_id=version_id, ordinal=0, text=text, page=None,
                  section=doc.sections[0].heading, char_start=0, char_end=len(text))]


def test_documents_cut_by_an_older_chunker_are_rechunked_once(make_ws, tmp_path, monkeypatch):
    import bastion.chunking.chunker as chunker

    write(tmp_path / "docs" / "expenses.csv", EXPENSES)
    write(tmp_path / "docs" / "handbook.md", HANDBOOK)
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.")
    ws = make_ws()
    with monkeypatch.context() as old:  # an index written before this version of the chunker
        old.setattr(chunker, "CHUNKING_VERSION", 1)
        old.setattr(chunker.Chunker, "chunk", _one_chunk_per_document)
        [first] = ws.sync()
    assert first.documents_added == 3 and first.chunks_written == 3
    [upgraded] = ws.sync()  # nothing changed in the files
    assert upgraded.documents_rechunked == 3 and upgraded.documents_updated == upgraded.documents_added == 0
    assert upgraded.documents_failed == 0
    sections = {(h.path, h.section) for h in ws.search("taxi hotel leave office security", ws.principal("bob"), 20,
                                                         mode="bm25")}
    assert {("expenses.csv", "row 3"), ("handbook.md", "Travel"), ("handbook.md", "Security")} <= sections
    assert len(ws.store.chunk_keys()) == 4 + 3 + 1
    [again] = ws.sync()
    assert again.documents_rechunked == 0 and again.documents_unchanged == 3 and again.chunks_written == 0


@pytest.mark.model
def test_the_taxi_limit_is_answered_from_its_row_on_the_default_embedder(tmp_path):
    """The evaluation's question abstained when the four rows were one chunk and a row fell apart into
    ``category: taxi;`` sentences; one row, one chunk, one sentence: it is quoted."""
    from bastion.workspace import Workspace

    write(tmp_path / "docs" / "expenses.csv", EXPENSES)
    write(tmp_path / "docs" / "handbook.md", HANDBOOK)
    ws = Workspace.init(tmp_path / "ws")
    ws.directory.add_user("dave", groups=["staff"])
    ws.sources.add_folder("docs", tmp_path / "docs", acl="everyone")
    ws.sync()
    answer = ws.ask("What is the taxi limit in the expenses table?", ws.principal("dave"), mode="extract")
    assert answer.decision == "extracted", answer.reason
    assert answer.citations[0].path == "expenses.csv" and "taxi" in answer.citations[0].quote
    assert "limit_eur = 60" in answer.citations[0].quote
