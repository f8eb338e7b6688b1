"""Each user's saved conversations: their questions and the answers they got (``Workspace.conversations``).

A conversation belongs to one user and is read only by them. Stored answers are shown as the
reader may read today (:mod:`bastion.stored_answers`): a citation whose documents they can no longer
read (restricted, deleted, their source removed) is replaced by a "no longer available to you"
marker, and the sentences of the answer that cite it are left out. Removing a user removes their conversations (the catalog's
foreign keys cascade).

Limits: at most :data:`MAX_CONVERSATIONS` conversations per user and :data:`MAX_TURNS` turns per
conversation; going past either is refused (:class:`ConversationFull`) and nothing is pruned.

>>> from bastion.catalog.db import Catalog
>>> from bastion.directory import Directory
>>> cat = Catalog.open("sqlite:///:memory:")
>>> _ = Directory(cat).add_user("alice")
>>> chats = Conversations(cat)
>>> c = chats.create("alice", "Travel")
>>> [(x.title, x.turns) for x in chats.list("alice")], chats.list("bob")
([('Travel', 0)], [])
"""
from __future__ import annotations

import builtins
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import ConversationRow, ConversationTurnRow, UserRow, utc_iso, utcnow
from bastion.core.errors import ConfigError, WorkspaceError
from bastion.core.types import Principal
from bastion.stored_answers import ANSWER_CUT, PASSAGE_GONE, cited_documents, readable_documents, shown_answer

MAX_CONVERSATIONS = 200
MAX_TURNS = 100
TITLE_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class ConversationError(WorkspaceError):
    """A conversation request that cannot be carried out."""


class ConversationNotFound(ConversationError):
    """No such conversation, or it is another user's (the two look the same)."""


class ConversationFull(ConversationError):
    """A limit on conversations per user or turns per conversation was reached."""


@dataclass(frozen=True)
class Conversation:
    """A conversation's summary (``turns``: how many questions it holds)."""

    id: str
    title: str
    created: datetime
    updated: datetime
    turns: int

    def to_dict(self) -> dict[str, Any]:
        """As the API shows it: ``id``, ``title``, ``created``, ``updated``, ``turns``."""
        return {"id": self.id, "title": self.title, "created": utc_iso(self.created),
                "updated": utc_iso(self.updated), "turns": self.turns}


@dataclass(frozen=True)
class Turn:
    """One question and the answer it got, as stored or as shown to a reader."""

    question: str
    answer: str
    citations: list[dict[str, Any]]
    decision: str
    message: str | None
    lineage_id: str | None
    created: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """As the API shows it."""
        return {"question": self.question, "answer": self.answer, "citations": self.citations,
                "decision": self.decision, "message": self.message, "lineage_id": self.lineage_id,
                "created": utc_iso(self.created)}


def clean_title(title: str) -> str:
    """``title`` on one line without control characters, at most :data:`TITLE_CHARS` long."""
    text = " ".join(_CONTROL.sub(" ", title).split())
    if not text:
        raise ConfigError(f"conversation title {title!r} has no visible character")
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1].rstrip() + "…"


def title_from(question: str, limit: int = 80) -> str:
    """A title for a new conversation: the question's first words, at most ``limit`` characters."""
    text = clean_title(question)
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


class Conversations:
    """The catalog's conversations, each read and changed only by its owner.

    Args:
        catalog: The workspace's catalog.
    """

    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def list(self, user_id: str) -> list[Conversation]:
        """``user_id``'s conversations, the latest changed first."""
        with self._catalog.session() as s:
            rows = s.scalars(select(ConversationRow).where(ConversationRow.user_id == user_id)
                             .order_by(ConversationRow.updated_at.desc(), ConversationRow.created_at.desc()))
            counts: dict[str, int] = {cid: n for cid, n in s.execute(
                select(ConversationTurnRow.conversation_id, func.count())
                .join(ConversationRow, ConversationRow.id == ConversationTurnRow.conversation_id)
                .where(ConversationRow.user_id == user_id).group_by(ConversationTurnRow.conversation_id))}
            return [self._summary(s, r, counts.get(r.id, 0)) for r in rows]

    def create(self, user_id: str, title: str | None = None) -> Conversation:
        """A new, empty conversation of ``user_id`` (title: "New conversation" when none is given)."""
        with self._catalog.session(write=True) as s:
            return self._summary(s, self._new(s, user_id, clean_title(title) if title else "New conversation"))

    def get(self, principal: Principal, conversation_id: str) -> tuple[Conversation, builtins.list[Turn]]:
        """One of ``principal``'s conversations and its turns, oldest first, as they may read them now."""
        with self._catalog.session() as s:
            row = self._own(s, principal.user_id, conversation_id)
            turns = list(s.scalars(select(ConversationTurnRow).where(ConversationTurnRow.conversation_id == row.id)
                                   .order_by(ConversationTurnRow.id)))
            readable = readable_documents(s, principal, cited_documents([c for t in turns for c in t.citations or []]))
            return self._summary(s, row, len(turns)), [_as_read(t, readable) for t in turns]

    def rename(self, user_id: str, conversation_id: str, title: str) -> Conversation:
        """Give one of ``user_id``'s conversations a new title."""
        with self._catalog.session(write=True) as s:
            row = self._own(s, user_id, conversation_id)
            row.title, row.updated_at = clean_title(title), utcnow()
            return self._summary(s, row)

    def remove(self, user_id: str, conversation_id: str) -> None:
        """Delete one of ``user_id``'s conversations with its turns."""
        with self._catalog.session(write=True) as s:
            row = self._own(s, user_id, conversation_id)
            s.execute(delete(ConversationTurnRow).where(ConversationTurnRow.conversation_id == row.id))
            s.delete(row)

    def remove_all(self, user_id: str) -> int:
        """Delete every conversation of ``user_id``; returns how many there were."""
        with self._catalog.session(write=True) as s:
            ids = list(s.scalars(select(ConversationRow.id).where(ConversationRow.user_id == user_id)))
            s.execute(delete(ConversationTurnRow).where(ConversationTurnRow.conversation_id.in_(ids)))
            s.execute(delete(ConversationRow).where(ConversationRow.user_id == user_id))
        return len(ids)

    def check_room(self, user_id: str, conversation_id: str | None) -> None:
        """Raise unless a turn can be added: to ``conversation_id`` of ``user_id``'s, or (None) to a new one."""
        with self._catalog.session() as s:
            if conversation_id is None:
                self._room_for_new(s, user_id)
            else:
                self._room_in(s, self._own(s, user_id, conversation_id))

    def append(self, user_id: str, conversation_id: str | None, turn: Turn) -> Conversation:
        """Add ``turn`` to one of ``user_id``'s conversations, or (None) to a new one titled from its question."""
        with self._catalog.session(write=True) as s:
            if conversation_id is None:
                row = self._new(s, user_id, title_from(turn.question))
            else:
                row = self._own(s, user_id, conversation_id)
                self._room_in(s, row)
            s.add(ConversationTurnRow(conversation_id=row.id, question=turn.question, answer=turn.answer,
                                      citations=turn.citations, decision=turn.decision, message=turn.message,
                                      lineage_id=turn.lineage_id))
            row.updated_at = utcnow()
            s.flush()
            return self._summary(s, row)

    # -- rows ------------------------------------------------------------------------------
    def _new(self, s: Session, user_id: str, title: str) -> ConversationRow:
        self._room_for_new(s, user_id)
        row = ConversationRow(id=uuid.uuid4().hex, user_id=user_id, title=title)
        s.add(row)
        s.flush()
        return row

    @staticmethod
    def _own(s: Session, user_id: str, conversation_id: str) -> ConversationRow:
        row = s.get(ConversationRow, conversation_id)
        if row is None or row.user_id != user_id:
            raise ConversationNotFound(f"no conversation {conversation_id!r} of yours")
        return row

    @staticmethod
    def _room_for_new(s: Session, user_id: str) -> None:
        if s.get(UserRow, user_id) is None:
            raise ConversationError(f"conversations are kept only for users of this workspace; {user_id!r} is not one")
        count = s.scalar(select(func.count()).select_from(ConversationRow).where(ConversationRow.user_id == user_id))
        if (count or 0) >= MAX_CONVERSATIONS:
            raise ConversationFull(f"you have {count} conversations, the limit is {MAX_CONVERSATIONS}; "
                                   "delete some to start a new one")

    @staticmethod
    def _room_in(s: Session, row: ConversationRow) -> None:
        if _turn_count(s, row.id) >= MAX_TURNS:
            raise ConversationFull(f"conversation {row.id!r} has {MAX_TURNS} turns, the limit; start a new one")

    @staticmethod
    def _summary(s: Session, row: ConversationRow, turns: int | None = None) -> Conversation:
        count = _turn_count(s, row.id) if turns is None else turns
        return Conversation(row.id, row.title, row.created_at, row.updated_at, count)


def _turn_count(s: Session, conversation_id: str) -> int:
    return s.scalar(select(func.count()).select_from(ConversationTurnRow)
                    .where(ConversationTurnRow.conversation_id == conversation_id)) or 0


def _as_read(row: ConversationTurnRow, readable: set[str]) -> Turn:
    """A stored turn as a reader who may read the documents ``readable`` sees it."""
    answer, citations = shown_answer(row.answer, row.citations or [], readable)
    return Turn(row.question, answer, citations, row.decision, row.message, row.lineage_id, row.created_at)


__all__ = ["ANSWER_CUT", "MAX_CONVERSATIONS", "MAX_TURNS", "PASSAGE_GONE", "Conversation", "ConversationError",
           "ConversationFull", "ConversationNotFound", "Conversations", "Turn", "clean_title", "title_from"]
