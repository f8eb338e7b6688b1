"""Chunks fit the window, follow structure, and carry exact offsets for citations."""
from bastion.chunking import Chunker, split_sentences
from bastion.parsing import parse


def words(text: str) -> int:
    return len(text.split()) + sum(1 for c in text if "\u4e00" <= c <= "\u9fff")


def test_chinese_and_english_sentence_boundaries():
    text = "第一句。第二句！Third one. Fourth?"
    spans = [text[a:b] for a, b in split_sentences(text)]
    assert spans == ["第一句。", "第二句！", "Third one.", "Fourth?"]


def test_chunks_respect_max_tokens_and_offsets_are_exact_slices():
    body = "\n\n".join(f"## Part {i}\n" + " ".join(f"Sentence {i}.{j} has five words." for j in range(30)) for i in range(4))
    doc = parse(body.encode(), "md")
    chunks = Chunker(words, max_tokens=60, overlap_tokens=10).chunk(doc, "d", "v")
    assert len(chunks) > 4
    for c in chunks:
        assert words(c.text) <= 60
        assert doc.text[c.char_start:c.char_end] == c.text
        assert c.section and c.section.startswith("Part")
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_overlap_carries_the_previous_sentences():
    doc = parse((" ".join(f"Fact number {i} is here." for i in range(40))).encode(), "txt")
    chunks = Chunker(words, max_tokens=30, overlap_tokens=10).chunk(doc, "d", "v")
    assert chunks[1].char_start < chunks[0].char_end  # overlap
    assert Chunker(words, max_tokens=30, overlap_tokens=0).chunk(doc, "d", "v")[1].char_start >= chunks[0].char_end


def test_new_section_starts_a_new_chunk_when_current_is_substantial():
    doc = parse(("# A\n" + "Alpha words here. " * 20 + "\n# B\nBeta words.").encode(), "md")
    chunks = Chunker(words, max_tokens=100, overlap_tokens=0).chunk(doc, "d", "v")
    assert [c.section for c in chunks] == ["A", "B"]


def test_overlong_sentence_is_cut():
    doc = parse(("x" * 5000).encode(), "txt")
    chunks = Chunker(lambda t: len(t) // 10, max_tokens=100, overlap_tokens=0).chunk(doc, "d", "v")
    assert len(chunks) >= 5 and all(len(c.text) // 10 <= 100 for c in chunks)


def test_pdf_pages_are_kept(tmp_path):
    from conftest import EXAMPLES

    doc = parse((EXAMPLES / "finance/q3_2026_results_summary.pdf").read_bytes(), "pdf")
    chunks = Chunker(words, max_tokens=120, overlap_tokens=0).chunk(doc, "d", "v")
    assert {c.page for c in chunks} == {1, 2, 3}
