"""What an evaluation works on: the :class:`EvalItem` s of a question set, and the
:class:`Outcome` of asking one item under one configuration.

An item's ``kind`` says what the right result is:

- ``answerable``: an answer from the sources; scored against ``answers`` (acceptable answer
  texts) and ``document`` (the source path a correct answer cites);
- ``unanswerable``: the sources do not hold the answer; the right result is the abstention;
- ``forbidden``: the answer is in a document the asker may not read; the right result is the
  abstention, and an answer that cites a document the asker may not read, or contains a gold
  answer, is a *leak*.

>>> item = EvalItem(question="How many days of leave?", answers=["25 days"], document="hr/leave.md")
>>> item.kind, item.to_dict()["answers"]
('answerable', ['25 days'])
>>> EvalItem.from_dict(item.to_dict()) == item
True
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("answerable", "unanswerable", "forbidden")


@dataclass(kw_only=True)
class EvalItem:
    """One question of a set, with what a right result looks like."""

    question: str
    kind: str = "answerable"  # answerable | unanswerable | forbidden
    answers: list[str] = field(default_factory=list)  # acceptable answers; empty: none given
    document: str | None = None  # the gold source path, as a citation's ``path`` names it
    sentence: str | None = None  # the gold sentence (generated sets), for reports
    asker: str | None = None  # the user to ask as; None: the run's default asker
    id: int | None = None  # the catalog's id once stored
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. origin, generator, feedback id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalItem:
        return cls(**data)


@dataclass(kw_only=True)
class Outcome:
    """What asking one item under one configuration gave.

    ``model_answered`` is true when a language model wrote an answer that went through the
    citation checks (the denominator of groundedness); ``grounded`` when that answer passed them.
    ``unreadable_citations`` counts cited documents the asker may not read (a leak, always 0
    unless access control is broken or a model recalls restricted text).
    """

    item: EvalItem
    answer: str
    decision: str  # answered | extracted | abstained
    reason: str | None = None
    cited_paths: list[str] = field(default_factory=list)
    quotes: list[str] = field(default_factory=list)
    model_answered: bool = False
    grounded: bool = False
    unreadable_citations: int = 0
    total_ms: float = 0.0
    first_token_ms: float | None = None
    generate_ms: float | None = None
    completion_tokens: int | None = None
    similarity: float | None = None  # cosine of the answer and the nearest gold answer (bundled embedder)
    repeat_answer: str | None = None  # the answer when asked a second time; None: not repeated
    judge: float | None = None  # the optional LLM judge's verdict in [0, 1]
    lineage_id: str | None = None
    error: str | None = None  # the item could not be asked (e.g. unknown asker): counted, never scored

    @property
    def abstained(self) -> bool:
        return self.decision == "abstained"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        d = dict(data)
        d["item"] = EvalItem.from_dict(d["item"])
        return cls(**d)


__all__ = ["KINDS", "EvalItem", "Outcome"]
