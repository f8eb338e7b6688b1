"""Trust checks on a generated answer: are its citations real, and do the cited sources say it?

A citation ``[n]`` is *valid* when ``n`` numbers a passage retrieved for this user and that
passage supports the sentence citing it: most of the sentence's content terms occur in it and
every number in the sentence occurs in it. Invalid citations are removed and counted. An
answer is *grounded* when it keeps at least one valid citation and none of its sentences is
unsupported by the sources it cites.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bastion.chunking.chunker import split_sentences
from bastion.retrieval.analyzer import analyze

_CITE = re.compile(r"\s*(?:\[(\s*\d+(?:\s*[,，、]\s*\d+)*\s*)\]|【\s*(\d+)\s*】)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_ONLY_CITES = re.compile(r"^(?:\s*(?:\[[\d\s,，、]+\]|【\s*\d+\s*】)[\s.。]*)+$")


@dataclass
class Claim:
    text: str  # the sentence without its citation marks
    cited: list[int]  # valid citations kept for it
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (n, why)
    supported: bool = True


@dataclass
class CheckedAnswer:
    text: str  # the answer with invalid citations removed
    claims: list[Claim]
    invalid_citations: int
    invalid_detail: list[dict[str, Any]]
    grounded: bool

    @property
    def cited(self) -> list[int]:
        return sorted({n for c in self.claims for n in c.cited})


def _numbers(text: str) -> set[str]:
    return {m.group().replace(",", "") for m in _NUMBER.finditer(text)}


def support(sentence: str, passage_text: str) -> tuple[float, bool]:
    """(share of the sentence's content terms found in the passage, all numbers present)."""
    terms = set(analyze(sentence))
    coverage = 1.0 if not terms else len(terms & set(analyze(passage_text))) / len(terms)
    numbers_ok = _numbers(sentence) <= _numbers(passage_text)
    return coverage, numbers_ok


def _split_claims(answer: str) -> list[tuple[str, list[int]]]:
    """Sentences with the citation numbers written in them; a run of bare citations after a
    full stop belongs to the sentence before it."""
    out: list[tuple[str, list[int]]] = []
    for a, b in split_sentences(answer):
        piece = answer[a:b]
        nums = [int(x) for m in _CITE.finditer(piece) for x in re.split(r"[,，、\s]+", (m.group(1) or m.group(2)).strip()) if x]
        text = _CITE.sub("", piece).strip()
        if _ONLY_CITES.match(piece) and out:
            out[-1][1].extend(nums)
            continue
        if text or nums:
            out.append((text, nums))
    return out


def check_answer(answer: str, passages: dict[int, str], *, min_support: float = 0.5) -> CheckedAnswer:
    """Validate every citation of ``answer`` against ``passages`` (number -> text shown to the model)."""
    claims: list[Claim] = []
    detail: list[dict[str, Any]] = []
    for text, nums in _split_claims(answer):
        claim = Claim(text=text, cited=[])
        for n in dict.fromkeys(nums):  # keep order, drop repeats
            if n not in passages:
                claim.dropped.append((n, "not a retrieved source"))
                continue
            coverage, numbers_ok = support(text, passages[n])
            if not numbers_ok:
                claim.dropped.append((n, "a number in the sentence is not in the source"))
            elif coverage < min_support:
                claim.dropped.append((n, f"source supports {coverage:.0%} of the sentence's terms"))
            else:
                claim.cited.append(n)
        if text and not claim.cited:
            # an uncited (or wrongly cited) sentence may still be supported by the answer's other sources
            claim.supported = False
        for n, why in claim.dropped:
            detail.append({"n": n, "sentence": text[:200], "reason": why})
        claims.append(claim)
    # sentences without their own citation: supported only if another cited source backs them
    cited_union = " ".join(passages[n] for c in claims for n in c.cited)
    for claim in claims:
        if claim.supported:
            continue
        if _is_filler(claim.text):
            claim.supported = True
        elif cited_union:
            coverage, numbers_ok = support(claim.text, cited_union)
            claim.supported = numbers_ok and coverage >= min_support
    rendered = " ".join(
        (c.text + ("" if not c.cited else " " + "".join(f"[{n}]" for n in c.cited))).strip() for c in claims if c.text
    )
    grounded = any(c.cited for c in claims) and all(c.supported for c in claims)
    return CheckedAnswer(text=rendered, claims=claims, invalid_citations=len(detail), invalid_detail=detail,
                         grounded=grounded)


def _is_filler(text: str) -> bool:
    """A sentence with no content terms and no numbers ("Yes.", "In short:") needs no source."""
    return not analyze(text) and not _numbers(text)


def says_not_found(answer: str, marker: str) -> bool:
    """The model declined: it wrote the not-found marker (or a close variant) instead of an answer."""
    norm = re.sub(r"[\s_*`'\".。]+", "", answer).upper()
    return bool(norm) and (marker.replace("_", "").upper() in norm.replace("_", "")) and len(norm) < 3 * len(marker)

