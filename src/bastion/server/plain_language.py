"""What an answer says to employees: a plain ``message``, and a ``reason`` without internals for non-admins.

The answering path explains each decision for the people who run it ("weak evidence: best sentence
scores 0.933 < answer.min_evidence 0.95"). Over the API an answer also carries ``message``, one
plain sentence for whoever asked, and callers below the admin role get ``reason`` in plain words,
with no scores, thresholds or configuration keys; admins keep the technical reason.

>>> message("abstained", "en")
"I couldn't find this in the documents you can access."
>>> message("answered", "en") is None
True
>>> member_reason("weak evidence: best sentence scores 0.933 < answer.min_evidence 0.95")
'the passages found do not answer this clearly enough'
"""
from __future__ import annotations

MESSAGES = {
    "abstained": {"en": "I couldn't find this in the documents you can access.",
                  "zh": "在您有权访问的文档中没有找到答案。"},
    "extracted": {"en": "Here are the passages that answer this, quoted from the documents.",
                  "zh": "以下是文档中回答此问题的原文段落。"},
}

# the start of each reason the answering path gives -> what a member is told instead
MEMBER_REASONS = (
    ("no authorised passage", "no passage you can access matched the question"),
    ("weak evidence", "the passages found do not answer this clearly enough"),
    ("the model found no answer", "the language model found no answer in the passages"),
    ("no LLM available", "no language model was available, so the passages are quoted"),
    ("prompt could not be built", "the question could not be prepared for the language model, so the passages "
                                  "are quoted"),
    ("the LLM failed", "the language model failed, so the passages are quoted"),
    ("the model's answer was not grounded", "the language model's draft did not pass the citation checks, so the "
                                            "passages are quoted"),
)
EMPTY_INDEX = {"en": "There are no documents to search yet: an administrator has to add and sync a source first.",
               "zh": "目前还没有可检索的文档：需要管理员先添加并同步数据源。"}
OTHER_REASON = "the answer could not be given as written; an administrator can see why in the answer's lineage"


def message(decision: str, language: str) -> str | None:
    """The plain sentence shown with an answer of ``decision`` (None for a checked answer: it speaks for itself)."""
    by_language = MESSAGES.get(decision)
    if by_language is None:
        return None
    return by_language.get(language, by_language["en"])


def empty_index_message(hint: str | None, language: str, *, admin: bool) -> str | None:
    """What an empty result says when the index itself is empty (``hint`` from ``Workspace.index_status``):
    admins get the hint with its commands, everyone else a plain sentence; None when documents are indexed.

    >>> empty_index_message(None, "en", admin=False) is None
    True
    >>> empty_index_message("the index is empty: run `bastion sync`", "en", admin=False)[:32]
    'There are no documents to search'
    """
    if hint is None:
        return None
    return hint if admin else EMPTY_INDEX.get(language, EMPTY_INDEX["en"])


def member_reason(reason: str | None) -> str | None:
    """``reason`` as a caller below the admin role sees it: plain words, no scores, thresholds or settings."""
    if reason is None:
        return None
    for start, plain in MEMBER_REASONS:
        if reason.startswith(start):
            return plain
    return OTHER_REASON


__all__ = ["EMPTY_INDEX", "MEMBER_REASONS", "MESSAGES", "empty_index_message", "member_reason", "message"]
