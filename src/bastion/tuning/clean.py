"""Cleaning a tuning dataset, with a report of every example it drops and why.

:func:`clean` scrubs personal data from prompts and targets (:func:`scrub`), drops examples that
are empty, garbled, in another language or too long, examples whose target held personal data
(the model would learn to answer ``[EMAIL]``), exact duplicates and near duplicates (MinHash
over character 5-grams, each candidate pair confirmed by its exact Jaccard similarity).
:func:`split_by_document` splits train and validation so that no document is on both sides.

>>> scrub("Mail jane.doe@example.com or call +44 20 7946 0958 from 10.0.0.12.")[0]
'Mail [EMAIL] or call [PHONE] from [IP].'
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError
from bastion.monitoring.quality import is_garbled, text_key
from bastion.tuning.data import Example

PLACEHOLDERS = {"email": "[EMAIL]", "iban": "[IBAN]", "id": "[ID]", "card": "[CARD]", "phone": "[PHONE]", "ip": "[IP]"}
REASONS = ("empty", "garbled", "language", "too_long", "pii_in_target", "exact_duplicate", "near_duplicate")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_CN_ID = re.compile(r"(?<![\dA-Za-z])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                    r"(?![\dA-Za-z])")
_CARD = re.compile(r"(?<![\d+.,-])\d(?:[ -]?\d){12,18}(?![\d.,-]?\d)")
_PHONES = (
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,5}(?![\d-])"),  # international, with a +
    re.compile(r"(?<![\d.-])1[3-9]\d(?:[ -]?\d{4}){2}(?![\d-])"),  # Chinese mobile
    re.compile(r"(?<![\d.-])0\d{2,3}-\d{7,8}(?![\d-])"),  # Chinese landline with area code
    re.compile(r"(?<![\w.-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\d-])"),  # North American
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)(?!\w)")
_VERSION_BEFORE = re.compile(r"(?i)(?:version|release|build|v)\.?\s*$")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only).

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces ignored).

    >>> iban_ok("DE89 3704 0044 0532 0130 00"), iban_ok("DE88 3704 0044 0532 0130 00")
    (True, False)
    """
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s.isalnum():
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def cn_id_ok(text: str) -> bool:
    """The ISO 7064 MOD 11-2 check digit of an 18-digit Chinese resident ID.

    >>> cn_id_ok("11010519491231002X"), cn_id_ok("110105194912310021")
    (True, False)
    """
    total = sum(int(c) * w for c, w in zip(text[:17], _ID_WEIGHTS))
    return "10X98765432"[total % 11] == text[17].upper()


def scrub(text: str) -> tuple[str, Counter[str]]:
    """``text`` with e-mail addresses, IBANs, Chinese resident IDs, card numbers, phone numbers
    and IPv4 addresses replaced by placeholders, and how many of each were replaced.

    Checksums (mod-97, MOD 11-2, Luhn) keep ordinary long numbers; dates, amounts and version
    numbers do not look like any of these.

    >>> scrub("IBAN DE89 3704 0044 0532 0130 00, card 4111 1111 1111 1111, v1.2.3.4, 2024-01-15")
    ('IBAN [IBAN], card [CARD], v1.2.3.4, 2024-01-15', Counter({'iban': 1, 'card': 1}))
    """
    found: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], kind: str, text: str, ok: Callable[[re.Match[str]], bool]) -> str:
        def repl(m: re.Match[str]) -> str:
            if not ok(m):
                return m.group()
            found[kind] += 1
            return PLACEHOLDERS[kind]
        return pattern.sub(repl, text)

    text = sub(_EMAIL, "email", text, lambda m: True)
    text = sub(_IBAN, "iban", text, lambda m: iban_ok(m.group()))
    text = sub(_CN_ID, "id", text, lambda m: cn_id_ok(m.group()))
    text = sub(_CARD, "card", text, lambda m: luhn_ok(re.sub(r"\D", "", m.group())))
    for pattern in _PHONES:
        text = sub(pattern, "phone", text, lambda m: 7 <= len(re.sub(r"\D", "", m.group())) <= 15)
    text = sub(_IPV4, "ip", text, lambda m: not _VERSION_BEFORE.search(m.string[max(0, m.start() - 10):m.start()]))
    return text, found


@dataclass
class CleanReport:
    """What cleaning did: examples in and kept, drops per reason, personal data replaced per kind."""

    input: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    pii: dict[str, int] = field(default_factory=dict)  # occurrences replaced in kept examples, per kind
    scrubbed_examples: int = 0  # kept examples in which something was replaced

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"dropped_total": self.dropped_total}


# -- near duplicates ---------------------------------------------------------------------------------
_PRIME = (1 << 31) - 1
_PERMUTATIONS = 64
_BANDS = 16  # 16 bands of 4 rows: pairs above ~0.5 Jaccard become candidates, then are checked exactly


def shingles(text: str, size: int = 5) -> set[str]:
    """Character ``size``-grams of the case-folded text with runs of spaces collapsed.

    >>> sorted(shingles("Ab  cdef"))
    [' cdef', 'ab cd', 'b cde']
    """
    norm = " ".join(text.casefold().split())
    if len(norm) <= size:
        return {norm} if norm else set()
    return {norm[i:i + size] for i in range(len(norm) - size + 1)}


def _coefficients() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20240501)  # fixed: signatures are comparable across runs
    a = rng.integers(1, _PRIME, size=_PERMUTATIONS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=_PERMUTATIONS, dtype=np.uint64)
    return a, b


def minhash(grams: set[str], coefficients: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The MinHash signature of a shingle set (``_PERMUTATIONS`` values)."""
    a, b = coefficients
    if not grams:
        return np.full(_PERMUTATIONS, _PRIME, dtype=np.uint64)
    h = np.fromiter((int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") % _PRIME
                     for g in sorted(grams)), dtype=np.uint64, count=len(grams))
    return np.asarray(((np.outer(h, a) + b) % _PRIME).min(axis=0), dtype=np.uint64)


def jaccard(x: set[str], y: set[str]) -> float:
    return len(x & y) / len(x | y) if x or y else 1.0


class NearDuplicates:
    """Remembers kept texts; ``seen(text)`` is True when a kept one is at least ``threshold`` similar."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.coefficients = _coefficients()
        self.kept: list[set[str]] = []
        self.buckets: dict[tuple[int, bytes], list[int]] = {}

    def seen(self, text: str) -> bool:
        grams = shingles(text)
        sig = minhash(grams, self.coefficients)
        rows = _PERMUTATIONS // _BANDS
        keys = [(band, sig[band * rows:(band + 1) * rows].tobytes()) for band in range(_BANDS)]
        candidates = sorted({i for k in keys for i in self.buckets.get(k, [])})
        if any(jaccard(grams, self.kept[i]) >= self.threshold for i in candidates):
            return True
        self.kept.append(grams)
        for k in keys:
            self.buckets.setdefault(k, []).append(len(self.kept) - 1)
        return False


# -- cleaning -----------------------------------------------------------------------------------------
def _scrubbed(example: Example) -> tuple[Example, Counter[str], bool]:
    """The example with every message scrubbed; whether its target changed."""
    total: Counter[str] = Counter()
    messages = []
    target_changed = False
    last_assistant = max((i for i, m in enumerate(example.messages) if m["role"] == "assistant"), default=-1)
    for i, m in enumerate(example.messages):
        text, found = scrub(m["content"])
        total += found
        target_changed |= i == last_assistant and bool(found)
        messages.append({"role": m["role"], "content": text})
    meta = dict(example.meta)
    if isinstance(meta.get("question"), str):
        meta["question"] = scrub(meta["question"])[0]
    return replace(example, messages=messages, meta=meta), total, target_changed


def _dialogue(example: Example) -> str:
    return "\n".join(m["content"] for m in example.messages if m["role"] != "system")


def _near_text(example: Example) -> str:
    """What makes an example itself: its question (else its last user message) and its target.
    Passages are left out: many questions share them."""
    question = example.meta.get("question")
    if not isinstance(question, str) or not question:
        question = next((m["content"] for m in reversed(example.messages) if m["role"] == "user"), "")
    return f"{question}\n{example.target}"


def clean(examples: Sequence[Example], *, max_tokens: int, count_tokens: Callable[[str], int],
          near_dup_threshold: float = 0.9, languages: set[str] | None = None,
          scrub_pii: bool = True) -> tuple[list[Example], CleanReport]:
    """The examples worth training on, in their order, and the report of what was dropped."""
    report = CleanReport(input=len(examples))
    kept: list[Example] = []
    exact: set[str] = set()
    near = NearDuplicates(near_dup_threshold)
    pii: Counter[str] = Counter()
    for ex in examples:
        reason = None
        found: Counter[str] = Counter()
        if not ex.messages or not ex.target.strip() or any(not m["content"].strip() for m in ex.messages):
            reason = "empty"
        elif is_garbled(_dialogue(ex)):
            reason = "garbled"
        elif languages is not None and ex.lang not in languages:
            reason = "language"
        elif sum(count_tokens(m["content"]) for m in ex.messages) > max_tokens:
            reason = "too_long"
        elif scrub_pii:
            ex, found, target_changed = _scrubbed(ex)
            if target_changed:
                reason = "pii_in_target"
        if reason is None:
            key = text_key("\n".join(f"{m['role']}: {m['content']}" for m in ex.messages))
            if key in exact:
                reason = "exact_duplicate"
            elif near.seen(_near_text(ex)):
                reason = "near_duplicate"
            exact.add(key)
        if reason is not None:
            report.dropped[reason] += 1
            continue
        pii += found
        report.scrubbed_examples += bool(found)
        kept.append(ex)
    report.kept = len(kept)
    report.pii = dict(sorted(pii.items()))
    return kept, report


def split_by_document(examples: Sequence[Example], val_share: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, validation): whole groups (documents) go to one side, about ``val_share`` of the
    examples to validation, at least one group on each side when there are two or more.

    >>> exs = [Example(messages=[], kind="grounded", lang="en", origin="x", documents=[], group=g) for g in "aabbc"]
    >>> train, val = split_by_document(exs, 0.4, seed=1)
    >>> {e.group for e in train} & {e.group for e in val}, len(train) + len(val)
    (set(), 5)
    """
    if not 0 <= val_share < 1:
        raise ConfigError(f"val_share = {val_share}: give a share from 0 up to (not including) 1")
    groups: dict[str, int] = {}
    for ex in examples:
        groups[ex.group] = groups.get(ex.group, 0) + 1
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    want = round(len(examples) * val_share)
    if val_share > 0 and len(groups) > 1:
        want = max(want, 1)
    val_groups: set[str] = set()
    n = 0
    for g in order:
        if n >= want or len(val_groups) == len(groups) - 1:
            break
        val_groups.add(g)
        n += groups[g]
    return [e for e in examples if e.group not in val_groups], [e for e in examples if e.group in val_groups]


__all__ = ["PLACEHOLDERS", "REASONS", "CleanReport", "NearDuplicates", "clean", "cn_id_ok", "iban_ok", "jaccard",
           "luhn_ok", "minhash", "scrub", "shingles", "split_by_document"]
