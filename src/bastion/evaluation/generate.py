"""Question sets generated from the corpus: answerable, unanswerable and forbidden items.

The caller reads the passages from the index as the right user and hands them in as
:class:`SourcePassage` s. Sentences that carry a checkable fact (a number, a date, a
capitalised name not at the sentence start; in Chinese digits, percentages and 《》 titles)
become questions:

- without a language model, a *cloze*: the sentence in a fixed, localised frame with the fact
  blanked, the fact being the gold answer;
- with one, the model writes a question and its short answer as JSON; the pair is accepted only
  when the answer is in the sentence and the question does not give it away, else the sentence
  falls back to a cloze.

*Unanswerable* items take such a question and replace another fact of its sentence (not the
blank) with a name or number found in no passage, so no source can answer it. *Forbidden* items
are ordinary questions asked by a user who may not read the gold document.
"""
from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bastion.chunking.chunker import split_sentences
from bastion.core.errors import GenerationError
from bastion.core.types import Principal
from bastion.evaluation.items import EvalItem
from bastion.generation.prompting import detect_language
from bastion.generation.protocol import LLM, ChatMessage, DecodingParams

Progress = Callable[[int, int], None]

# preferred sentence lengths (characters) per language; sentences within half the minimum and
# twice the maximum are used only when the preferred ones run out
LENGTHS = {"en": (40, 300), "zh": (12, 200)}
CLOZE_FRAMES = {"en": 'Complete from the sources: "{}"', "zh": "根据资料填空：“{}”"}
BLANK = "____"
MAX_ANSWER_CHARS = 80
# substitutes for unanswerable items: each is used only when it occurs in no passage
FAKE_NAMES = ("Quillmere", "Varnholt", "Brennick", "Marrowfen", "Oskavel", "Tamsworth", "Ildrana", "Corvessa")
FAKE_TITLES = ("青岚守则", "北辰章程", "云栖条例", "澄湖办法", "远山规程", "星渚细则")
FAKE_NUMBERS = ("4173", "8629", "9157", "3847", "6291", "7583", "5318", "2764")
# a model that fails this many sentences in a row is not asked again in this run
MAX_LLM_FAILURES_IN_A_ROW = 3
# constrains llama.cpp backends to the reply format; others ignore it
QA_GRAMMAR = 'root ::= "{\\"question\\": \\"" text "\\", \\"answer\\": \\"" text "\\"}"\ntext ::= [^"\\\\\\n]{1,300}'

_MONTH = (r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
          r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?")
_EN_SPANS = (
    ("number", re.compile(rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b")),
    ("number", re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?\b")),
    ("number", re.compile(rf"\b{_MONTH}\s+\d{{4}}\b")),
    ("number", re.compile(r"\b\d{4}-\d{2}-\d{2}\b")),
    ("number", re.compile(r"(?<![\w.,/-])(?:[$€£¥]\s?|(?:EUR|USD|GBP|CNY|RMB|CHF|JPY)\s)?\d+(?:[.,:]\d+)*(?:\s?%|st|nd|rd|th)?(?![\w%])")),
    ("name", re.compile(r"\b[A-Z][\w&'’-]*(?:\s+[A-Z][\w&'’-]*)*")),
)
_ZH_SPANS = (
    ("number", re.compile(r"(?<![A-Za-z\d.０-９-])[\d０-９]+(?:[.,][\d０-９]+)*(?:\s?[%％])?")),
    ("title", re.compile(r"(?<=《)[^《》\n]{1,30}(?=》)")),
)
_DIGITS = re.compile(r"[\d０-９]+(?:[.,:][\d０-９]+)*")
_MARKUP = re.compile(r"\*\*|__|`")  # Markdown emphasis and code marks, dropped from sentences
_LEAD = re.compile(r"^(?:[#>*+\-\s]+|\d+[.)]\s+)+")
_JSON = re.compile(r"\{.*\}", re.DOTALL)


@dataclass(frozen=True)
class SourcePassage:
    """One chunk of one document, as the caller read it from the index."""

    doc_id: str
    path: str  # the document's path as citations name it
    text: str
    acl: frozenset[str]  # the document's ACL labels


@dataclass
class GenerationResult:
    """The items, what to tell the user about them, and the ACLs of the documents they quote."""

    items: list[EvalItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    acl: list[list[str]] = field(default_factory=list)  # distinct sorted label lists


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str  # number | name | title

    def text(self, sentence: str) -> str:
        return sentence[self.start:self.end]


@dataclass(frozen=True)
class _Candidate:
    """A sentence with the facts that may be blanked in it."""

    passage: SourcePassage
    sentence: str
    lang: str
    spans: tuple[_Span, ...]
    preferred: bool


@dataclass
class _Asking:
    """The model (if any), with what asking it gave so far."""

    llm: LLM | None
    seed: int
    cache: dict[tuple[str, str], tuple[str, str] | str] = field(default_factory=dict)
    fallbacks: Counter[str] = field(default_factory=Counter)
    asked: int = 0
    failures_in_a_row: int = 0


def normalise(text: str) -> str:
    """Case-folded NFKC text with runs of spaces collapsed and edge punctuation stripped."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold())
    return text.strip(" \"'“”‘’.,;:!?()。，；：！？（）")


def _spans(sentence: str, lang: str) -> list[_Span]:
    """The facts of ``sentence`` that make a fair blank: distinct, non-overlapping, and each
    occurring once in the sentence (else the question would hold its own answer)."""
    found: list[_Span] = []
    for kind, pattern in _ZH_SPANS if lang == "zh" else _EN_SPANS:
        for m in pattern.finditer(sentence):
            s, e = m.start(), m.end()
            if kind == "name":
                e = s + len(re.sub(r"(?:['’]s|[-'’&])+$", "", m.group()))
                before = sentence[:s].rstrip(" \"'“‘(（*")
                if not before or before[-1] in ".!?:;" or e - s < 2:
                    continue  # a capital at a sentence start says nothing
            found.append(_Span(s, e, kind))
    kept: list[_Span] = []
    for span in sorted(found, key=lambda sp: (sp.start - sp.end, sp.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    frame = normalise(CLOZE_FRAMES[lang])
    fair = []
    for span in sorted(kept, key=lambda sp: sp.start):
        answer = span.text(sentence)
        if sentence.casefold().count(answer.casefold()) == 1 and normalise(answer) not in frame:
            fair.append(span)
    return fair


def _candidates(passage: SourcePassage) -> list[_Candidate]:
    """The sentences of a passage that hold at least one fair blank, with their tier."""
    out = []
    for s, e in split_sentences(passage.text):
        sentence = _LEAD.sub("", _MARKUP.sub("", passage.text[s:e]).strip()).strip()
        if not sentence or sentence.count("|") >= 2 or "://" in sentence or sentence.endswith((":", "：")):
            continue  # table rows, links and lead-ins to a list make poor questions
        lang = detect_language(sentence)
        low, high = LENGTHS[lang]
        if not low // 2 <= len(sentence) <= high * 2:
            continue
        spans = _spans(sentence, lang)
        if spans:
            out.append(_Candidate(passage, sentence, lang, tuple(spans), low <= len(sentence) <= high))
    return out


def _by_document(passages: Sequence[SourcePassage]) -> dict[str, list[_Candidate]]:
    """Candidates per document, each sentence once (chunks overlap), in a stable order."""
    by_doc: dict[str, dict[str, _Candidate]] = {}
    for passage in passages:
        for cand in _candidates(passage):
            by_doc.setdefault(passage.doc_id, {}).setdefault(cand.sentence, cand)
    return {doc: [seen[s] for s in sorted(seen)] for doc, seen in sorted(by_doc.items())}


def _spread(by_doc: Mapping[str, list[_Candidate]], rng: random.Random) -> list[_Candidate]:
    """Every candidate in a seeded order that takes one sentence per document in turn, the
    preferred lengths first."""
    docs = list(by_doc)
    rng.shuffle(docs)
    order: list[_Candidate] = []
    for preferred in (True, False):
        queues = []
        for doc in docs:
            queue = [c for c in by_doc[doc] if c.preferred is preferred]
            rng.shuffle(queue)
            queues.append(queue)
        for turn in range(max((len(q) for q in queues), default=0)):
            order.extend(q[turn] for q in queues if turn < len(q))
    return order


def _cloze(cand: _Candidate, blank: _Span, swap: tuple[_Span, str] | None = None) -> str:
    """The sentence in its language's frame, ``blank`` blanked and ``swap`` (span, text) applied."""
    edits = [(blank, BLANK)] + ([swap] if swap else [])
    text = cand.sentence
    for span, new in sorted(edits, key=lambda ed: -ed[0].start):
        text = text[:span.start] + new + text[span.end:]
    return CLOZE_FRAMES[cand.lang].format(text)


def _prompt(cand: _Candidate) -> list[ChatMessage]:
    if cand.lang == "zh":
        system = ("你根据一句话出一道题。只输出 JSON：{\"question\": \"…\", \"answer\": \"…\"}。"
                  "答案是从句子中原样摘出的简短片段；问题仅凭这句话即可回答，且不得包含答案。")
        user = f"句子：{cand.sentence}\nJSON："
    else:
        system = ('You write one exam question from a sentence. Reply with JSON only: '
                  '{"question": "...", "answer": "..."}. The answer is a short phrase copied from the sentence; '
                  "the question can be answered from the sentence alone and must not contain the answer.")
        user = f"Sentence: {cand.sentence}\nJSON:"
    return [ChatMessage("system", system), ChatMessage("user", user)]


def _parse_reply(text: str, sentence: str) -> tuple[str, str] | str:
    """(question, answer) when the reply is acceptable, else the reason it is not."""
    match = _JSON.search(text)
    try:
        data = json.loads(match.group()) if match else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("question"), str) \
            or not isinstance(data.get("answer"), str):
        return "bad JSON"
    question, answer = data["question"].strip(), data["answer"].strip().rstrip(".。")
    if not question or not normalise(answer):
        return "bad JSON"
    if normalise(answer) not in normalise(sentence) or len(answer) > MAX_ANSWER_CHARS \
            or normalise(answer) == normalise(sentence):
        return "answer not in the sentence"
    if normalise(answer) in normalise(question):
        return "question contains the answer"
    return question, answer


def _llm_question(asking: _Asking, cand: _Candidate) -> tuple[str, str] | None:
    """The model's (question, answer) for a sentence, asked once per sentence; None: fall back."""
    if asking.llm is None:
        return None
    key = (cand.passage.doc_id, cand.sentence)
    if key not in asking.cache:
        if asking.failures_in_a_row >= MAX_LLM_FAILURES_IN_A_ROW:
            asking.cache[key] = "model failing"
        else:
            params = DecodingParams(temperature=0.0, seed=asking.seed, max_tokens=128, grammar=QA_GRAMMAR)
            try:
                reply = asking.llm.generate(_prompt(cand), params).text
            except GenerationError:
                asking.failures_in_a_row += 1
                asking.cache[key] = "model error"
            else:
                asking.failures_in_a_row = 0
                asking.cache[key] = _parse_reply(reply, cand.sentence)
    got = asking.cache[key]
    return got if isinstance(got, tuple) else None


def _question(asking: _Asking, cand: _Candidate, rng: random.Random) -> tuple[str, str, str]:
    """(question, answer, generator) for a sentence: the model's when acceptable, else a cloze."""
    got = _llm_question(asking, cand)
    if asking.llm is not None:
        asking.asked += 1
        if got is None:
            reason = asking.cache[(cand.passage.doc_id, cand.sentence)]
            asking.fallbacks[str(reason)] += 1
    if got is not None:
        return got[0], got[1], "llm"
    blank = rng.choice(cand.spans)
    return _cloze(cand, blank), blank.text(cand.sentence), "cloze"


def _substitute(span: _Span, original: str, corpus: str, rng: random.Random) -> str | None:
    """A replacement for a fact that occurs in no passage (``corpus``: every passage's text,
    case-folded, one a line), or None."""
    pool = list(FAKE_TITLES if span.kind == "title" else FAKE_NAMES if span.kind == "name" else FAKE_NUMBERS)
    rng.shuffle(pool)
    for fake in pool:
        if fake.casefold() not in corpus:
            if span.kind != "number":
                return fake
            digits = max(_DIGITS.finditer(original), key=lambda m: len(m.group()))  # a date's year
            return original[:digits.start()] + fake + original[digits.end():]
    return None


def _unanswerable(asking: _Asking, cand: _Candidate, corpus: str, rng: random.Random,
                  asker: str | None) -> EvalItem | None:
    """The sentence's question with one fact of its context replaced by one found nowhere: the
    model's question when it names a fact other than its answer, else a cloze."""
    got = _llm_question(asking, cand)
    attempts: list[tuple[_Span, _Span | None]] = []  # (context, blank); no blank: the model's question
    if got is not None:
        attempts += [(c, None) for c in rng.sample(cand.spans, len(cand.spans))]
    pairs = [(c, b) for b in cand.spans for c in cand.spans if b is not c]
    attempts += rng.sample(pairs, len(pairs))
    for context, blank in attempts:
        original = context.text(cand.sentence)
        fake = _substitute(context, original, corpus, rng)
        if fake is None:
            continue
        if blank is not None:
            question, answer, generator = _cloze(cand, blank, (context, fake)), blank.text(cand.sentence), "cloze"
        elif got is not None and got[0].count(original) == 1 and normalise(original) not in normalise(got[1]) \
                and normalise(got[1]) not in normalise(original):
            question, answer, generator = got[0].replace(original, fake), got[1], "llm"
        else:
            continue  # the model's question does not name this fact, or its answer is this fact
        if normalise(answer) in normalise(question):
            continue
        return EvalItem(question=question, kind="unanswerable", asker=asker,
                        meta={"generator": generator, "from": cand.passage.path,
                              "replaced": original, "substitute": fake})
    return None


def generate_items(passages: Sequence[SourcePassage], *, count: int, asker: str | None, seed: int = 0,
                   llm: LLM | None = None, unanswerable: int = 0,
                   forbidden: Sequence[tuple[str, SourcePassage]] = (),
                   progress: Progress | None = None) -> GenerationResult:
    """Generate a question set from ``passages``.

    Args:
        passages: the chunks the set may quote, read as ``asker``.
        count: how many answerable items to make (fewer when the sources hold too few good
            sentences; ``notes`` says so).
        asker: the user the answerable and unanswerable items are asked as (None: the run's default).
        seed: makes the choice of sentences, blanks and substitutes reproducible.
        llm: writes the questions when given; otherwise (and whenever its reply is unusable) cloze.
        unanswerable: how many items whose answer no source holds.
        forbidden: (user id, passage) pairs; one item each, asked by a user who may not read it.
        progress: called with (items handled, items planned) as the work goes.

    Returns:
        The items, notes for the user, and the distinct ACLs of the documents the items quote.

    >>> p = SourcePassage("d1", "hr/leave.md", "Every employee gets 25 days of paid leave per calendar year.",
    ...                   frozenset({"everyone"}))
    >>> result = generate_items([p], count=1, asker="alice")
    >>> item = result.items[0]
    >>> item.question, item.answers, item.document
    ('Complete from the sources: "Every employee gets ____ days of paid leave per calendar year."', ['25'], 'hr/leave.md')
    >>> result.acl
    [['everyone']]
    """
    rng = random.Random(seed)
    asking = _Asking(llm, seed)
    result = GenerationResult()
    total, done = max(count, 0) + max(unanswerable, 0) + len(forbidden), 0
    quoted: set[tuple[str, ...]] = set()

    def produced(item: EvalItem | None, passage: SourcePassage) -> None:
        nonlocal done
        done += 1
        if item is not None:
            result.items.append(item)
            quoted.add(tuple(sorted(passage.acl)))
        if progress:
            progress(done, total)

    order = _spread(_by_document(passages), rng)
    for cand in order[:max(count, 0)]:
        question, answer, generator = _question(asking, cand, rng)
        produced(EvalItem(question=question, answers=[answer], document=cand.passage.path, sentence=cand.sentence,
                          asker=asker, meta=_meta(generator, cand, llm)), cand.passage)
    made = min(len(order), max(count, 0))
    result.notes.append(f"answerable: {made} of {count} requested" + (
        f"; the sources hold only {len(order)} suitable sentences" if made < count else ""))
    done = _skip(progress, total, done, max(count, 0) - made)

    if unanswerable > 0:
        corpus = "\n".join(p.text.casefold() for p in [*passages, *(p for _, p in forbidden)])
        used = {id(c) for c in order[:made]}
        pool = sorted((c for c in order if len(c.spans) > 1), key=lambda c: id(c) in used)
        n = 0
        for cand in pool:
            if n == unanswerable:
                break
            item = _unanswerable(asking, cand, corpus, rng, asker)
            if item is not None:
                n += 1
                produced(item, cand.passage)
        result.notes.append(f"unanswerable: {n} of {unanswerable} requested" + (
            "; too few sentences hold a second fact to replace" if n < unanswerable else ""))
        done = _skip(progress, total, done, unanswerable - n)

    n = 0
    for user, passage in forbidden:
        cands = _spread(_by_document([passage]), rng)
        if not cands:
            result.notes.append(f"forbidden: no suitable sentence in {passage.path}; skipped")
            produced(None, passage)
            continue
        question, answer, generator = _question(asking, cands[0], rng)
        n += 1
        produced(EvalItem(question=question, kind="forbidden", answers=[answer], document=passage.path,
                          sentence=cands[0].sentence, asker=user, meta=_meta(generator, cands[0], llm)), passage)
    if forbidden:
        result.notes.append(f"forbidden: {n} of {len(forbidden)} requested")

    if llm is not None and asking.asked:
        fell = sum(asking.fallbacks.values())
        reasons = ", ".join(f"{why}: {k}" for why, k in sorted(asking.fallbacks.items()))
        result.notes.append(f"llm: {fell} of {asking.asked} questions fell back to cloze"
                            + (f" ({reasons})" if reasons else ""))
    result.acl = [list(acl) for acl in sorted(quoted)]
    return result


def _meta(generator: str, cand: _Candidate, llm: LLM | None) -> dict[str, str]:
    meta = {"generator": generator, "doc_id": cand.passage.doc_id}
    if generator == "llm" and llm is not None:
        meta["model"] = llm.id
    return meta


def _skip(progress: Progress | None, total: int, done: int, missing: int) -> int:
    """Count the slots a phase could not fill as handled, so progress reaches the total."""
    if missing > 0:
        done += missing
        if progress:
            progress(done, total)
    return done


def pick_forbidden(passages: Sequence[SourcePassage], users: Mapping[str, Principal], n: int,
                   seed: int = 0) -> list[tuple[str, SourcePassage]]:
    """Up to ``n`` (user id, passage) pairs where that user may not read the passage's document,
    one document after another and passages that make a question first; empty when none exists.

    >>> p = SourcePassage("d1", "fin/q3.md", "Revenue rose 12% in Q3.", frozenset({"group:finance"}))
    >>> pick_forbidden([p], {"bob": Principal("bob"), "carol": Principal("carol", frozenset({"finance"}))}, 5)
    [('bob', SourcePassage(doc_id='d1', path='fin/q3.md', text='Revenue rose 12% in Q3.', acl=frozenset({'group:finance'})))]
    """
    rng = random.Random(seed)
    by_doc: dict[str, list[SourcePassage]] = {}
    for p in passages:
        by_doc.setdefault(p.doc_id, []).append(p)
    queues: list[list[tuple[str, SourcePassage]]] = []
    for doc in sorted(by_doc):
        chunks = sorted(set(by_doc[doc]), key=lambda p: (not _candidates(p), p.text))
        blocked = [u for u in sorted(users) if not users[u].can_read(chunks[0].acl)]
        rng.shuffle(blocked)
        # each user once per document, each on a different passage while passages last
        queues.append([(u, chunks[i % len(chunks)]) for i, u in enumerate(blocked)])
    rng.shuffle(queues)
    pairs: list[tuple[str, SourcePassage]] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        pairs.extend(q[turn] for q in queues if turn < len(q))
    return pairs[:max(n, 0)]


__all__ = ["GenerationResult", "SourcePassage", "generate_items", "normalise", "pick_forbidden"]
