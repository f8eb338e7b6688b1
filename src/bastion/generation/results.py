"""What answering returns: an :class:`Answer` and its :class:`Citation` s.

Both are plain dataclasses that serialise with ``to_dict`` (the HTTP API's and the answer
cache's form) and come back with ``Answer.from_dict``.

>>> cite = Citation(n=1, chunk_id="c1", document="Leave", path="hr/leave.md", page=None,
...                 quote="Staff receive 25 days of paid leave.", doc_id="d1", version_id="v1")
>>> ans = Answer(answer="Staff receive 25 days of paid leave [1].", abstained=False, decision="answered",
...              reason=None, citations=[cite], lineage_id="0" * 32, question="How many days of leave?",
...              rewritten_question=None, language="en", mode="answer", grounded=True)
>>> Answer.from_dict(ans.to_dict()) == ans
True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(kw_only=True)
class Citation:
    """One cited passage: ``[n]`` in the answer text, the chunk and document version it came from,
    and the verbatim ``quote`` that supports the sentence citing it.

    ``sources`` lists every passage the quote was found in (``chunk_id``, ``doc_id``, ``source``,
    ``document``, ``path``, ``page``, ``version_id``), the one above first: identical text from several
    documents is cited once (:mod:`bastion.generation.duplicates`)."""

    n: int
    chunk_id: str
    document: str
    path: str
    page: int | None
    quote: str
    doc_id: str
    version_id: str
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Answer:
    """A checked answer (``decision``: ``answered`` | ``extracted`` | ``abstained``; see
    :mod:`bastion.generation.answer`) with its citations and the id of its lineage record."""

    answer: str
    abstained: bool
    decision: str  # answered | extracted | abstained
    reason: str | None
    citations: list[Citation]
    lineage_id: str
    question: str
    rewritten_question: str | None
    language: str
    mode: str
    grounded: bool
    invalid_citations: int = 0
    cached: bool = False
    model: str | None = None
    adapter: str | None = None  # the LoRA adapter that wrote it (None: the base model, or no model)
    timings_ms: dict[str, float] = field(default_factory=dict)
    # open freshness / quality / parse / drift alerts of the cited sources (bastion.monitoring)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["citations"] = [c.to_dict() for c in self.citations]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        """The inverse of ``to_dict`` (a cached answer has no ``timings_ms``: it gets an empty one)."""
        d = dict(data)
        d["citations"] = [Citation(**c) for c in d.get("citations", [])]
        d.setdefault("timings_ms", {})
        return cls(**d)


__all__ = ["Answer", "Citation"]
