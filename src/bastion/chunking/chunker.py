"""Cut a parsed document into chunks that fit the embedder's window.

A section with a heading (a Markdown, HTML or Word heading's body, a table row labelled
``row 3``) always starts a new chunk, so each is retrievable on its own; sections without
one (pages, paragraphs of plain text) are packed together and cut where a new one begins
once the chunk is half full. Inside a section the cut falls between sentences (English and
Chinese punctuation), and only a single sentence longer than the window is cut inside.
Sizes are counted with the embedder's own tokenizer. Every chunk is an exact slice of the
document text, so its character offsets can be quoted in a citation.

:data:`CHUNKING_VERSION` names how documents are cut (parsers and chunker together); each
indexed version records it with the sizes (:attr:`Chunker.fingerprint`), and a sync re-chunks
the documents indexed under another one.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from bastion.core.types import Chunk, ParsedDocument

TokenCounter = Callable[[str], int]

# Bump when a parser or the chunker cuts documents differently: the next sync re-chunks every
# document indexed under an older value. 2: headed sections and table rows are chunks of their own.
CHUNKING_VERSION = 2

# a sentence ends at . ! ? followed by space, at Chinese full stops, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？；])|\n+")


def split_sentences(text: str, base: int = 0) -> list[tuple[int, int]]:
    """Return (start, end) offsets of the sentences of ``text``, shifted by ``base``."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.start() > start else match.end()
        if text[start:end].strip():
            spans.append((base + start, base + end))
        start = match.end()
    if text[start:].strip():
        spans.append((base + start, base + len(text)))
    return spans


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    section_index: int


class Chunker:
    """Pack sentences into chunks of at most ``max_tokens``, with ``overlap_tokens`` carried over.

    >>> c = Chunker(lambda t: len(t.split()), max_tokens=8, overlap_tokens=0)
    >>> from bastion.parsing.markdown import parse
    >>> [ch.text for ch in c.chunk(parse(b"# A\\nOne two. Three four."), "d", "v")]
    ['# A\\nOne two. Three four.']
    """

    def __init__(self, count_tokens: TokenCounter, max_tokens: int = 256, overlap_tokens: int = 32):
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    @property
    def fingerprint(self) -> str:
        """How this chunker cuts: the code's version and the sizes (``"2:256:32"``)."""
        return f"{CHUNKING_VERSION}:{self.max_tokens}:{self.overlap_tokens}"

    def _units(self, doc: ParsedDocument, text: str) -> list[_Unit]:
        units: list[_Unit] = []
        for index, section in enumerate(doc.sections):
            for start, end in split_sentences(section.text, section.start):
                units.extend(self._fit(start, end, text, index))
        return units

    def _fit(self, start: int, end: int, text: str, index: int) -> list[_Unit]:
        """Split one over-long sentence into window-sized pieces (by character share)."""
        tokens = self.count_tokens(text[start:end])
        if tokens <= self.max_tokens:
            return [_Unit(start, end, tokens, index)]
        pieces = -(-tokens // self.max_tokens) + 1
        step = max(1, (end - start) // pieces)
        out = []
        for s in range(start, end, step):
            e = min(end, s + step)
            out.append(_Unit(s, e, self.count_tokens(text[s:e]), index))
        return out

    def chunk(self, doc: ParsedDocument, doc_id: str, version_id: str) -> list[Chunk]:
        text = doc.text
        units = self._units(doc, text)
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        size = 0
        for unit in units:
            new_section = bool(current) and unit.section_index != current[-1].section_index
            headed = new_section and doc.sections[unit.section_index].heading is not None
            full = size + unit.tokens > self.max_tokens
            if current and (full or headed or (new_section and size >= self.max_tokens // 2)):
                groups.append(current)
                current = self._overlap(current) if full and not new_section else []
                size = sum(u.tokens for u in current)
            current.append(unit)
            size += unit.tokens
        if current:
            groups.append(current)
        return [self._make(doc, text, g, i, doc_id, version_id) for i, g in enumerate(groups)]

    def _overlap(self, units: list[_Unit]) -> list[_Unit]:
        carried: list[_Unit] = []
        total = 0
        for unit in reversed(units[1:]):  # never carry the whole previous chunk
            if total + unit.tokens > self.overlap_tokens:
                break
            carried.insert(0, unit)
            total += unit.tokens
        return carried

    @staticmethod
    def _make(doc: ParsedDocument, text: str, units: list[_Unit], ordinal: int, doc_id: str, version_id: str) -> Chunk:
        start, end = units[0].start, units[-1].end
        section = doc.sections[units[0].section_index]
        body = text[start:end]
        digest = hashlib.sha256(f"{version_id}\x00{ordinal}\x00{body}".encode()).hexdigest()[:32]
        return Chunk(
            chunk_id=digest,
            doc_id=doc_id,
            version_id=version_id,
            ordinal=ordinal,
            text=body,
            page=section.page,
            section=section.heading,
            char_start=start,
            char_end=end,
        )
