"""Identical passages and quotes from several sources, shown once with all their sources.

Two sources may hold the same file (a share and its copy), and one sentence may appear in several
documents. An answer then shows each text once: retrieved passages whose text is identical after
whitespace normalisation become one numbered passage (the best-ranked copy), and identical quotes
become one quote; its citation lists every document it came from in ``sources``. The numbers in
the answer text count distinct texts, so they stay consecutive.

>>> from bastion.core.types import Hit
>>> def hit(cid, source, text):
...     return Hit(chunk_id=cid, doc_id="d" + cid, document="Travel", path="hr/travel.md", source=source,
...                page=None, section=None, score=1.0, text=text, char_start=0, char_end=len(text), version_id="v")
>>> kept, copies = merge_identical([hit("1", "docs", "Hotels: EUR 180."), hit("2", "share", "Hotels:  EUR 180.\\n")])
>>> [h.chunk_id for h in kept], [h.source for h in copies["1"]]
(['1'], ['share'])
>>> [s["source"] for s in source_refs(kept[0], copies)]
['docs', 'share']
>>> quotes = [Sentence(1, "Hotels: EUR 180.", 0, 16), Sentence(2, "Hotels:  EUR 180.", 5, 22), Sentence(2, "Taxis: no.", 0, 9)]
>>> kept_quotes, also = merge_quotes(quotes)
>>> [(q.n, q.text) for q in kept_quotes], also
([(1, 'Hotels: EUR 180.'), (2, 'Taxis: no.')], {1: [2]})
"""
from __future__ import annotations

from typing import Any

from bastion.core.types import Hit
from bastion.generation.extract import Sentence

Copies = dict[str, list[Hit]]  # chunk id of the passage kept -> the other passages with its text


def normalise(text: str) -> str:
    """``text`` with every run of whitespace made one space, and no leading or trailing space."""
    return " ".join(text.split())


def merge_identical(hits: list[Hit]) -> tuple[list[Hit], Copies]:
    """Keep the first of each group of hits with identical normalised text, in rank order.

    Args:
        hits: Retrieved passages, best first.

    Returns:
        The distinct passages, and the copies of each (by the kept passage's chunk id).
    """
    first: dict[str, Hit] = {}
    copies: Copies = {}
    for hit in hits:
        key = normalise(hit.text)
        if key in first:
            copies.setdefault(first[key].chunk_id, []).append(hit)
        else:
            first[key] = hit
    return list(first.values()), copies


def source_ref(hit: Hit) -> dict[str, Any]:
    """Where one passage comes from, as a citation's ``sources`` lists it."""
    return {"chunk_id": hit.chunk_id, "doc_id": hit.doc_id, "source": hit.source, "document": hit.document,
            "path": hit.path, "page": hit.page, "version_id": hit.version_id}


def source_refs(hit: Hit, copies: Copies) -> list[dict[str, Any]]:
    """The passage ``hit`` and every copy of its text, in rank order."""
    return [source_ref(h) for h in (hit, *copies.get(hit.chunk_id, []))]


def merge_quotes(quotes: list[Sentence]) -> tuple[list[Sentence], dict[int, list[int]]]:
    """Keep the first of each group of quotes with identical normalised text.

    Args:
        quotes: Quotes in the order they are shown, each with its passage number ``n``.

    Returns:
        The distinct quotes, and for each kept passage number the other passage numbers whose
        quote it stands for (their sources join its citation).
    """
    first: dict[str, Sentence] = {}
    also: dict[int, list[int]] = {}
    for quote in quotes:
        key = normalise(quote.text)
        if key not in first:
            first[key] = quote
        elif quote.n != first[key].n and quote.n not in also.get(first[key].n, []):
            also.setdefault(first[key].n, []).append(quote.n)
    return list(first.values()), also


def numbered_hits(hits: list[Hit], copies: Copies) -> list[tuple[int, Hit]]:
    """Every retrieved passage with the number it is shown under: copies share their text's number
    (what the lineage record lists, so each copy's document version stays traceable)."""
    return [(n, h) for n, kept in enumerate(hits, start=1) for h in (kept, *copies.get(kept.chunk_id, []))]


__all__ = ["Copies", "merge_identical", "merge_quotes", "normalise", "numbered_hits", "source_ref", "source_refs"]
