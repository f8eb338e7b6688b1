"""Extractive answers: verbatim sentences of the authorised passages, ranked with the embedder.

No LLM: deterministic, fast, works in every language the embedder knows. It is also how the
evidence for an answer is scored (the best sentence's cosine similarity to the question), and
the fallback when no LLM is configured, the LLM fails, or its answer does not pass the checks.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bastion.chunking.chunker import split_sentences
from bastion.retrieval.analyzer import analyze

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Sentence:
    n: int  # the passage number (1-based rank among the retrieved passages)
    text: str
    start: int  # offset in the passage text
    end: int
    score: float = 0.0
    cosine: float = 0.0  # similarity with the question in the embedder's space
    coverage: float = 0.0  # share of the question's terms the sentence contains


def candidate_sentences(passages: list[str], question: str, limit: int = 12) -> list[Sentence]:
    """Sentences of the passages, pre-ranked by term overlap with the question (cheap), top ``limit``."""
    q = set(analyze(question))
    scored = []
    for n, text in enumerate(passages, start=1):
        for a, b in split_sentences(text):
            s = text[a:b].strip()
            if len(s) > 600:
                continue
            terms = set(analyze(s))
            # too short to state a fact: headings, dates, list stubs
            cjk = len(_CJK.findall(s))
            words = [t for t in terms if not t.isdigit()]
            if (cjk and cjk < 6) or (not cjk and (len(words) < 3 or len(s) < 12)):
                continue
            lexical = len(q & terms) / math.sqrt(len(terms))
            # earlier passages ranked higher by retrieval: a gentle prior breaks ties
            scored.append((lexical + 0.05 / n, Sentence(n, s, a, b)))
    scored.sort(key=lambda x: (-x[0], x[1].n, x[1].start))
    return [s for _, s in scored[:limit]]


LEXICAL_WEIGHT = 0.3


def rank_sentences(question: str, sentences: list[Sentence], embed_query: Callable[[str], np.ndarray],
                   embed_passages: Callable[[list[str]], np.ndarray]) -> list[Sentence]:
    """Re-rank by cosine similarity with the question in the embedder's space, plus a small
    bonus for the share of the question's terms the sentence contains (names, numbers and
    codes that a small embedder blurs)."""
    if not sentences:
        return []
    qv = np.asarray(embed_query(question), dtype=np.float32)
    sv = np.asarray(embed_passages([s.text for s in sentences]), dtype=np.float32)
    # numbers are left out: a year or a date matches half of any company's documents
    q_terms = {t for t in analyze(question) if not t.isdigit()}
    lexical = np.asarray([len(q_terms & set(analyze(s.text))) / len(q_terms) if q_terms else 0.0
                          for s in sentences], dtype=np.float32)
    cosines = sv @ qv
    scores = cosines + LEXICAL_WEIGHT * lexical
    ranked = [Sentence(s.n, s.text, s.start, s.end, float(sc), float(c), float(lx))
              for s, sc, c, lx in zip(sentences, scores, cosines, lexical)]
    ranked.sort(key=lambda s: (-s.score, s.n, s.start))
    return ranked


def select_quotes(ranked: list[Sentence], *, max_quotes: int = 3, margin: float = 0.02) -> list[Sentence]:
    """The best sentence, plus those within ``margin`` of it, at most ``max_quotes``; in source order."""
    if not ranked:
        return []
    best = ranked[0].score
    picked = [s for s in ranked if s.score >= best - margin][:max_quotes]
    return sorted(picked, key=lambda s: (s.n, s.start))


def render_quotes(quotes: list[Sentence], lang: str) -> str:
    open_q, close_q = ("“", "”")
    return "\n".join(f"{open_q}{q.text}{close_q} [{q.n}]" for q in quotes)
