"""Text-quality measures of what a sync brings in (pure functions, no I/O).

A chunk is *garbled* when it carries at least one sign of broken text per 200 characters
(and at least one): Unicode replacement characters (bytes that did not decode), control
characters other than tab / newline, or mojibake, i.e. text decoded with the wrong codec
(``CafÃ©``, ``â€™``, ``ä¸­æ–‡``), which ftfy's badness heuristic counts.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ftfy.badness import badness

from bastion.generation.prompting import detect_language

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LETTER = re.compile(r"[^\W\d_]")
GARBLED_PER_CHARS = 200


def bad_signs(text: str) -> int:
    """How many signs of broken text ``text`` carries."""
    return text.count("\ufffd") + len(_CONTROL.findall(text)) + badness(text)


def is_garbled(text: str) -> bool:
    signs = bad_signs(text)
    return signs > 0 and signs * GARBLED_PER_CHARS >= len(text)


def language(text: str) -> str:
    """``zh`` / ``en`` for text carried by Chinese or Latin script, ``other`` for other letters,
    ``none`` when it has no letters at all (numbers, symbols)."""
    if not _LETTER.search(text):
        return "none"
    lang = detect_language(text)
    if lang == "en" and not re.search(r"[A-Za-z]", text):
        return "other"
    return lang


def text_key(text: str) -> str:
    """Identity of a chunk's text for duplicate counting (case and spacing do not matter)."""
    return hashlib.sha1(" ".join(text.lower().split()).encode()).hexdigest()


def version_stats(texts: list[str], columns: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """What the catalog keeps about one document version's text (``document_versions.stats``)."""
    langs = Counter(language(t) for t in texts)
    stats = {"chunks": len(texts), "chars": sum(len(t) for t in texts),
             "garbled": sum(1 for t in texts if is_garbled(t)), "languages": dict(langs)}
    if columns:
        stats["columns"] = columns
    return stats


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    i = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[i])


class DeltaQuality:
    """Accumulates the quality of the text one sync brings in (new and changed versions)."""

    def __init__(self) -> None:
        self.examined = 0  # documents read and parsed (or tried)
        self.parse_failures = 0
        self.empty = 0
        self.chunks = 0
        self.garbled = 0
        self.lengths: list[int] = []
        self.keys: Counter[str] = Counter()
        self.languages: Counter[str] = Counter()

    def failed(self) -> None:
        self.examined += 1
        self.parse_failures += 1

    def parsed(self, texts: list[str], stats: dict[str, Any]) -> None:
        self.examined += 1
        if not texts or not stats["chars"]:
            self.empty += 1
        self.chunks += len(texts)
        self.garbled += stats["garbled"]
        self.languages.update(stats["languages"])
        for t in texts:
            self.lengths.append(len(t))
            self.keys[text_key(t)] += 1

    def to_dict(self) -> dict[str, Any]:
        dupes = sum(n - 1 for n in self.keys.values() if n > 1)
        mean = sum(self.lengths) / len(self.lengths) if self.lengths else None
        return {
            "examined": self.examined, "parse_failures": self.parse_failures, "empty": self.empty,
            "chunks": self.chunks, "garbled_chunks": self.garbled,
            "parse_failure_ratio": _ratio(self.parse_failures, self.examined),
            "empty_ratio": _ratio(self.empty, self.examined - self.parse_failures),
            "garbled_ratio": _ratio(self.garbled, self.chunks),
            "duplicate_ratio": _ratio(dupes, self.chunks),
            "chunk_chars": {"mean": None if mean is None else round(mean, 1), "p50": percentile(self.lengths, 0.5),
                            "p95": percentile(self.lengths, 0.95)},
            "languages": dict(self.languages),
        }


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 4) if d > 0 else None
