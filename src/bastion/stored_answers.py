"""A stored answer as its reader may read it today.

An answer kept for later (a conversation's turn) quotes passages its reader could read when they
asked. Read again later, each citation keeps only the sources whose documents the reader may still
read (active, and their ACL admits the reader: the rule of ``DocumentCatalog.readable``); a citation
left with none becomes a "no longer available to you" marker with no quote, path or title, and the
answer keeps only the sentences whose citations all remain readable, followed by a note.

>>> cites = [{"n": 1, "doc_id": "d1", "quote": "Hotels: EUR 180.", "sources": [{"doc_id": "d1", "chunk_id": "c1"}]},
...          {"n": 2, "doc_id": "d2", "quote": "Q3 revenue: EUR 48.2m.", "sources": [{"doc_id": "d2", "chunk_id": "c2"}]}]
>>> answer, shown = shown_answer("Hotels cost EUR 180 [1]. Revenue was EUR 48.2m [2].", cites, {"d1"})
>>> answer
'Hotels cost EUR 180 [1].\\n(Part of this answer came from documents that are no longer available to you.)'
>>> [(c["n"], c["available"], c["quote"]) for c in shown]
[(1, True, 'Hotels: EUR 180.'), (2, False, None)]
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.catalog.models import DocumentRow
from bastion.chunking.chunker import split_sentences
from bastion.core.types import Principal

PASSAGE_GONE = "This passage is no longer available to you."
ANSWER_CUT = "(Part of this answer came from documents that are no longer available to you.)"
_CITE = re.compile(r"\[(\s*\d+(?:\s*[,，、]\s*\d+)*\s*)\]|【\s*(\d+)\s*】")
_PASSAGE_FIELDS = ("chunk_id", "doc_id", "document", "path", "page", "version_id")


def sources_of(citation: dict[str, Any]) -> list[dict[str, Any]]:
    """Where a stored citation's text came from: its ``sources``, else the citation itself."""
    return list(citation.get("sources") or [citation])


def cited_documents(citations: Iterable[dict[str, Any]]) -> set[str]:
    """The ids of every document the citations name."""
    return {d for c in citations for ref in sources_of(c) if isinstance(d := ref.get("doc_id"), str)}


def readable_documents(s: Session, principal: Principal, doc_ids: set[str]) -> set[str]:
    """The documents of ``doc_ids`` that ``principal`` may read now."""
    if not doc_ids:
        return set()
    rows = s.execute(select(DocumentRow.id, DocumentRow.status, DocumentRow.acl).where(DocumentRow.id.in_(doc_ids)))
    return {doc_id for doc_id, status, acl in rows if status == "active" and principal.can_read(acl or [])}


def shown_answer(answer: str, citations: list[dict[str, Any]], readable: set[str]) -> tuple[str, list[dict[str, Any]]]:
    """``answer`` and its ``citations`` as a reader who may read the documents ``readable`` sees them.

    Args:
        answer: The answer text as it was given, with ``[n]`` citations.
        citations: Its citations as they were given (each with ``n`` and, normally, ``sources``).
        readable: The ids of the documents the reader may read now.

    Returns:
        The answer (unchanged when every citation stays readable) and the citations, each marked
        ``available``.
    """
    shown, gone = [], set()
    for c in citations:
        kept = [ref for ref in sources_of(c) if ref.get("doc_id") in readable]
        if kept:  # the first readable source is the one the citation opens
            first = {k: kept[0][k] for k in _PASSAGE_FIELDS if k in kept[0]}
            shown.append(c | first | {"sources": kept, "available": True})
        else:
            gone.add(c.get("n"))
            shown.append({"n": c.get("n"), **dict.fromkeys((*_PASSAGE_FIELDS, "quote")), "sources": [],
                          "available": False, "message": PASSAGE_GONE})
    return (_cut(answer, gone) if gone else answer), shown


def _cut(answer: str, gone: set[Any]) -> str:
    """``answer`` keeping only the sentences whose citations all remain readable, then a note."""
    kept = []
    for line in answer.splitlines():
        pieces: list[tuple[str, set[int]]] = []
        for a, b in split_sentences(line):
            piece = line[a:b].strip()
            nums = {int(x) for m in _CITE.finditer(piece)
                    for x in re.split(r"[,，、\s]+", (m.group(1) or m.group(2)).strip()) if x}
            if pieces and not _CITE.sub("", piece).strip(" .。"):  # bare citations belong to the sentence before
                pieces[-1] = (pieces[-1][0] + " " + piece, pieces[-1][1] | nums)
            else:
                pieces.append((piece, nums))
        shown = [p for p, nums in pieces if nums and not nums & gone]
        if shown:
            kept.append(" ".join(shown))
    return "\n".join([*kept, ANSWER_CUT])


__all__ = ["ANSWER_CUT", "PASSAGE_GONE", "cited_documents", "readable_documents", "shown_answer", "sources_of"]
