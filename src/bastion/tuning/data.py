"""Training examples in the product's own prompt format, each with the ACLs of its documents.

An :class:`Example` is a chat: the system and user messages exactly as the workspace's prompt
template renders them for a question over numbered passages, then the assistant's target. A
target is a grounded answer (the gold sentence verbatim, citing its passage as ``[n]``) or the
not-found marker when the passages do not hold the answer; :func:`check_answer` must accept
every grounded target, so the model learns nothing the product would reject.

Examples come from the corpus (cloze questions over a source's documents), a question set, the
users' rated answers, or a user's JSONL file. Every example lists the documents its text came
from (its passages, and the document a question quotes) with their ACLs, so
:mod:`bastion.tuning.guard` can decide whether the audience may learn from it. Passages are
only ever read as a principal of the audience and re-checked against the guard: no text of a
document the audience may not read enters an example.

>>> ex = Example(messages=[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A [1]."}],
...              kind="grounded", lang="en", origin="file:x", documents=[], group="g")
>>> Example.from_dict(ex.to_dict()) == ex, ex.target
(True, 'A [1].')
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.catalog.models import DocumentRow, EvalCandidateRow, FeedbackRow, LineageRow, SourceRow
from bastion.chunking.chunker import split_sentences
from bastion.core.errors import ConfigError
from bastion.evaluation.generate import SourcePassage, generate_items, normalise
from bastion.generation.citations import check_answer, says_not_found
from bastion.generation.prompting import (
    NOT_FOUND,
    Passage,
    PromptTemplate,
    detect_language,
    load_template,
    trim_passage,
)
from bastion.retrieval.analyzer import analyze
from bastion.tuning.guard import document_admitted, parse_audience, search_principal

if TYPE_CHECKING:
    from bastion.workspace import Workspace

Progress = Callable[[int, int], None]
CountTokens = Callable[[str], int]
KINDS = ("grounded", "abstain", "instruction")
MAX_FILE_BYTES = 100 * 1024 * 1024
_MAX_ERRORS_SHOWN = 20
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9\u3400-\u9fff\uf900-\ufaff]")
_CITE_MARK = re.compile(r"\[(\d+)\]")
_QUOTE_LINE = re.compile(r"^“(.+)”\s*\[(\d+)\]$")
_END = ".。!！;；:： "
_MARKUP = re.compile(r"\*\*|__|`")


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per Chinese character, 1.3 per word or symbol.

    >>> approx_tokens("Every employee gets 25 days."), approx_tokens("每位员工")
    (8, 4)
    """
    return len(_CJK.findall(text)) + (len(_WORD.findall(text)) * 13 + 9) // 10


@dataclass(kw_only=True)
class Example:
    """One training conversation and where its text came from."""

    messages: list[dict[str, str]]  # the product's system/user messages, then the assistant's target
    kind: str  # grounded | abstain | instruction
    lang: str  # en | zh
    origin: str  # corpus:<source> | set:<name>@<v> | feedback | file:<name>
    documents: list[dict[str, Any]]  # {doc_id, version_id, path, acl} of every document its text came from
    group: str  # the split key: the gold document's doc_id (a hash for file examples)
    meta: dict[str, Any] = field(default_factory=dict)  # question, gold passage number, chunk ids, ...

    @property
    def target(self) -> str:
        """The assistant's last message: what the model is taught to write."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        return cls(**data)


@dataclass
class Stats:
    """What building examples gave: how many, and what was withheld and why."""

    built: int = 0
    dropped_acl: int = 0  # documents (corpus) or items/answers (sets, feedback) the audience may not read
    dropped_check: int = 0  # targets check_answer rejected
    by_kind: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # other reasons (stale passages, forbidden items, ...)
    notes: list[str] = field(default_factory=list)

    def add(self, example: Example) -> None:
        self.built += 1
        self.by_kind[example.kind] = self.by_kind.get(example.kind, 0) + 1

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def merge(self, other: Stats) -> None:
        self.built += other.built
        self.dropped_acl += other.dropped_acl
        self.dropped_check += other.dropped_check
        for mine, theirs in ((self.by_kind, other.by_kind), (self.skipped, other.skipped)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        self.notes.extend(other.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Source:
    """One chunk the audience may read, as a prompt passage and a lineage entry."""

    chunk_id: str
    doc_id: str
    version_id: str
    path: str
    title: str
    text: str
    acl: tuple[str, ...]

    def lineage(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "version_id": self.version_id, "path": self.path, "acl": list(self.acl)}


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    key: str
    version_id: str | None
    acl: tuple[str, ...]


def cite(sentence: str, n: int, lang: str) -> str:
    """A sentence as a grounded answer citing passage ``n``.

    >>> cite("Staff get 25 days of leave.", 2, "en"), cite("员工每年有25天假期。", 1, "zh")
    ('Staff get 25 days of leave [2].', '员工每年有25天假期[1]。')
    """
    text = " ".join(sentence.split()).rstrip(_END)
    return f"{text}[{n}]。" if lang == "zh" else f"{text} [{n}]."


class _Builder:
    """Renders examples with the workspace's prompt template, passages read as the audience."""

    def __init__(self, ws: Workspace, audience: list[str], *, template_name: str | None, seed: int,
                 count_tokens: CountTokens | None, stats: Stats):
        a = ws.config.answer
        self.ws = ws
        self.audience = audience
        self.template: PromptTemplate = load_template(template_name or a.prompt, a.prompt_dir, a.few_shot_file,
                                                      base=ws.home)
        self.budget = a.passage_tokens
        self.min_support = a.min_support
        self.count = count_tokens or approx_tokens
        self.rng = random.Random(seed)
        self.principal = search_principal(audience)
        self.stats = stats
        self._docs: dict[str, _Doc | None] = {}

    # -- documents and passages, through the guard ----------------------------------------------
    def docs(self, doc_ids: Sequence[str]) -> dict[str, _Doc | None]:
        """The active catalog documents with these ids (None: gone), cached."""
        wanted = [d for d in dict.fromkeys(doc_ids) if d not in self._docs]
        if wanted:
            with self.ws.catalog.session() as s:
                rows = s.scalars(select(DocumentRow).where(DocumentRow.id.in_(wanted), DocumentRow.status == "active"))
                found = {r.id: _Doc(r.id, r.key, r.current_version_id, tuple(sorted(r.acl or []))) for r in rows}
            for d in wanted:
                self._docs[d] = found.get(d)
        return {d: self._docs[d] for d in doc_ids}

    def admitted(self, doc: _Doc | None) -> bool:
        return doc is not None and document_admitted(doc.acl, self.audience)

    def chunks(self, doc_ids: Sequence[str]) -> list[_Source]:
        """The current chunks of these documents that the guard admits (catalog and index ACL both)."""
        docs = {k: d for k, d in self.docs(doc_ids).items() if d is not None and self.admitted(d)}
        out = []
        for r in self.ws.store.rows_for(sorted(docs)) if docs else []:
            doc = docs.get(r["doc_id"])
            if doc is None or r["version_id"] != doc.version_id or not document_admitted(r.get("acl") or [], self.audience):
                continue
            out.append(_Source(r["chunk_id"], r["doc_id"], r["version_id"], r["path"], r.get("document") or r["path"],
                               r["text"], doc.acl))
        return sorted(out, key=lambda c: (c.doc_id, c.chunk_id))

    def distractors(self, question: str, *, want: int, exclude_doc: str | None, sentence: str | None,
                    source: str | None) -> list[_Source]:
        """Up to ``want`` passages retrieved for ``question`` as the audience, from admitted
        documents other than ``exclude_doc``, none of which supports ``sentence``."""
        if want <= 0:
            return []
        hits = self.ws.search(question, self.principal, max(10, 4 * want), source=source)
        docs = self.docs([h.doc_id for h in hits])
        fit: list[_Source] = []
        for h in hits:
            doc = docs[h.doc_id]
            if h.doc_id == exclude_doc or any(f.chunk_id == h.chunk_id for f in fit):
                continue
            if doc is None or not self.admitted(doc) or h.version_id != doc.version_id:
                continue  # the guard: a passage the audience may not read never enters a prompt
            src = _Source(h.chunk_id, h.doc_id, h.version_id, h.path, h.document or h.path, h.text, doc.acl)
            if sentence and self.supports(sentence, src.text):
                continue  # it would answer the question too
            fit.append(src)
        # distinct documents first, then more chunks of the same ones
        firsts = {f.doc_id: f for f in reversed(fit)}
        ordered = [f for f in fit if firsts[f.doc_id] is f] + [f for f in fit if firsts[f.doc_id] is not f]
        return ordered[:want]

    def supports(self, sentence: str, text: str) -> bool:
        return check_answer(cite(sentence, 1, "en"), {1: text}, min_support=self.min_support).grounded

    # -- rendering -------------------------------------------------------------------------------
    def passages(self, question: str, sources: Sequence[_Source], keep: str | None = None,
                 keep_index: int | None = None) -> list[Passage]:
        """Numbered, trimmed as the product trims (the ``keep`` sentence's terms kept in passage
        ``keep_index``)."""
        terms = set(analyze(question))
        out = []
        for i, s in enumerate(sources):
            t = terms | set(analyze(keep)) if keep and i == keep_index else terms
            out.append(Passage(i + 1, s.title, " ".join(trim_passage(s.text, t, self.budget, self.count).split())))
        return out

    def render(self, question: str, passages: list[Passage], lang: str, target: str) -> list[dict[str, str]]:
        msgs = [{"role": m.role, "content": m.content} for m in self.template.messages(question, passages, lang)]
        return [*msgs, {"role": "assistant", "content": target}]

    def grounded(self, question: str, gold: _Source, sentence: str, distractors: list[_Source], *, origin: str,
                 quoted: Sequence[_Source] = (), meta: dict[str, Any] | None = None) -> Example | None:
        """The gold passage among the distractors in a seeded order; the sentence cites it."""
        sources = [gold, *distractors]
        self.rng.shuffle(sources)
        n = sources.index(gold) + 1
        lang = detect_language(question)
        passages = self.passages(question, sources, sentence, n - 1)
        target = cite(sentence, n, lang)
        if not check_answer(target, {p.n: p.text for p in passages}, min_support=self.min_support).grounded:
            self.stats.dropped_check += 1
            return None
        return self.example(question, passages, sources, lang, target, "grounded", origin, gold.doc_id,
                             quoted, {**(meta or {}), "gold": n})

    def abstain(self, question: str, sources: list[_Source], *, origin: str, group: str,
                quoted: Sequence[_Source] = (), meta: dict[str, Any] | None = None) -> Example:
        """Passages that do not hold the answer; the target is the not-found marker."""
        sources = list(sources)
        self.rng.shuffle(sources)
        lang = detect_language(question)
        return self.example(question, self.passages(question, sources), sources, lang, NOT_FOUND, "abstain", origin,
                             group, quoted, meta or {})

    def example(self, question: str, passages: list[Passage], sources: Sequence[_Source], lang: str, target: str,
                 kind: str, origin: str, group: str, quoted: Sequence[_Source], meta: dict[str, Any]) -> Example:
        documents: dict[tuple[str, str], dict[str, Any]] = {}
        for s in [*sources, *quoted]:
            documents.setdefault((s.doc_id, s.version_id), s.lineage())
        ex = Example(messages=self.render(question, passages, lang, target), kind=kind, lang=lang, origin=origin,
                     documents=list(documents.values()), group=group,
                     meta={"question": question, "chunks": [s.chunk_id for s in sources], **meta})
        self.stats.add(ex)
        return ex


def _plain(text: str) -> str:
    """Normalised text without Markdown emphasis and code marks (question generation drops them)."""
    return normalise(_MARKUP.sub("", text))


def _gold(chunks: Sequence[_Source], sentence: str | None, answers: Sequence[str]) -> tuple[_Source, str] | None:
    """The chunk holding the gold sentence (else one holding an answer), and the sentence to cite."""
    if sentence:
        want = _plain(sentence)
        for c in chunks:
            if want and want in _plain(c.text):
                return c, _MARKUP.sub("", sentence)
    for answer in answers:
        want = _plain(answer)
        for c in chunks:
            if not want or want not in _plain(c.text):
                continue
            for a, b in split_sentences(c.text):
                if want in _plain(c.text[a:b]):
                    return c, " ".join(_MARKUP.sub("", c.text[a:b]).split())
    return None


def _source_documents(ws: Workspace, source: str) -> list[_Doc]:
    ws.sources.get(source)
    with ws.catalog.session() as s:
        source_id = s.scalar(select(SourceRow.id).where(SourceRow.name == source))
        rows = s.scalars(select(DocumentRow).where(DocumentRow.source_id == source_id, DocumentRow.status == "active"))
        return [_Doc(r.id, r.key, r.current_version_id, tuple(sorted(r.acl or []))) for r in rows]


def _acl_summary(docs: Sequence[_Doc]) -> str:
    counts = Counter(", ".join(d.acl) or "(nobody)" for d in docs)
    return "; ".join(f"[{acl}] x{n}" for acl, n in sorted(counts.items()))


def grounded_from_corpus(ws: Workspace, source: str, audience: Sequence[str], *, count: int, negatives: float = 0.25,
                         passages: int = 3, seed: int = 0, template_name: str | None = None,
                         progress: Progress | None = None,
                         count_tokens: CountTokens | None = None) -> tuple[list[Example], Stats]:
    """``count`` examples from cloze questions over the documents of ``source`` the audience may read.

    Each question's gold chunk sits among ``passages - 1`` distractors retrieved for it as the
    audience from other admitted documents; a ``negatives`` share of the questions instead get
    only distractors (``passages`` of them) and the not-found marker as their target. Documents
    the audience may not read are counted in ``dropped_acl`` and never read.

    Raises:
        ConfigError: the source has no indexed document, or the audience may read none (the
            message lists the ACLs its documents have).
    """
    audience = parse_audience(audience)
    if not 0 <= negatives <= 1:
        raise ConfigError(f"negatives = {negatives}: give a share between 0 and 1")
    if passages < 1:
        raise ConfigError(f"passages = {passages}: a prompt needs at least one passage")
    stats = Stats()
    docs = _source_documents(ws, source)
    if not docs:
        raise ConfigError(f"source {source!r} has no indexed documents; run `bastion sync {source}` first")
    allowed = [d for d in docs if document_admitted(d.acl, audience)]
    stats.dropped_acl = len(docs) - len(allowed)
    if not allowed:
        raise ConfigError(f"the audience {','.join(audience)} may read no document of {source!r}: a document is admitted "
                          f"only if its ACL holds 'everyone' or every audience label. Its documents' ACLs: "
                          f"{_acl_summary(docs)}")
    b = _Builder(ws, audience, template_name=template_name, seed=seed, count_tokens=count_tokens, stats=stats)
    chunks = b.chunks([d.doc_id for d in allowed])
    by_doc: dict[str, list[_Source]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    result = generate_items([SourcePassage(c.doc_id, c.path, c.text, frozenset(c.acl)) for c in chunks],
                            count=count, asker=None, seed=seed, llm=None)
    stats.notes.extend(result.notes)
    items = result.items
    rng = random.Random(seed)
    negative = set(rng.sample(range(len(items)), round(len(items) * negatives)))
    origin = f"corpus:{source}"
    examples: list[Example] = []
    for i, item in enumerate(items):
        if progress:
            progress(i + 1, len(items))
        doc_id = str(item.meta.get("doc_id"))
        found = _gold(by_doc.get(doc_id, []), item.sentence, item.answers)
        if found is None:
            stats.skip("gold sentence not found in its chunks")
            continue
        gold, sentence = found
        meta = {"answer": item.answers[0] if item.answers else None}
        if i in negative:
            others = b.distractors(item.question, want=passages, exclude_doc=doc_id, sentence=sentence, source=source)
            if others:  # the question quotes the gold document, so it is one of the example's documents
                examples.append(b.abstain(item.question, others, origin=origin, group=doc_id, quoted=[gold], meta=meta))
                continue
            stats.skip("no distractor for a negative; made it grounded")
        others = b.distractors(item.question, want=passages - 1, exclude_doc=doc_id, sentence=sentence, source=source)
        ex = b.grounded(item.question, gold, sentence, others, origin=origin, meta=meta)
        if ex is not None:
            examples.append(ex)
    return examples, stats


def _set_documents(b: _Builder, path: str | None, doc_id: str | None) -> list[_Doc]:
    """The active documents an item names (by id when generated, else by path)."""
    if doc_id:
        doc = b.docs([doc_id])[doc_id]
        return [doc] if doc else []
    if not path:
        return []
    with b.ws.catalog.session() as s:
        ids = list(s.scalars(select(DocumentRow.id).where(DocumentRow.key == path, DocumentRow.status == "active")))
    return [d for d in b.docs(sorted(ids)).values() if d is not None]


def from_question_set(ws: Workspace, set_ref: str, audience: Sequence[str], *, passages: int = 3, seed: int = 0,
                      template_name: str | None = None, progress: Progress | None = None,
                      count_tokens: CountTokens | None = None) -> tuple[list[Example], Stats]:
    """Examples from a question set: answerable items with a document become grounded examples
    (the document's chunk holding the sentence or answer, among distractors retrieved as the
    audience), unanswerable items abstain examples. A set the audience may not read (its ACL,
    which covers its questions) gives none; forbidden items are skipped."""
    audience = parse_audience(audience)
    stats = Stats()
    eval_set = ws.evaluation.sets.get(set_ref)
    items = ws.evaluation.sets.items(eval_set)
    if not eval_set.acl or not all(document_admitted(acl, audience) for acl in eval_set.acl):
        stats.dropped_acl = len(items)
        stats.notes.append(f"set {eval_set.ref} is readable under the ACLs {eval_set.acl}, which do not admit the "
                           f"audience {','.join(audience)}; none of its items was used")
        return [], stats
    b = _Builder(ws, audience, template_name=template_name, seed=seed, count_tokens=count_tokens, stats=stats)
    origin = f"set:{eval_set.ref}"
    examples: list[Example] = []
    for done, item in enumerate(items, 1):
        if progress:
            progress(done, len(items))
        if item.kind == "forbidden":
            stats.skip("forbidden item")
            continue
        if item.kind == "unanswerable":
            quoted_docs = _set_documents(b, item.meta.get("from"), None)
            if item.meta.get("from") and not quoted_docs:
                stats.skip("the document the question quotes is gone")
                continue
            if not all(b.admitted(d) for d in quoted_docs):
                stats.dropped_acl += 1
                continue
            others = b.distractors(item.question, want=passages, exclude_doc=None, sentence=None, source=None)
            if not others:
                stats.skip("no admitted passage retrieved")
                continue
            quoted = [c for d in quoted_docs for c in b.chunks([d.doc_id])[:1]]
            group = quoted_docs[0].doc_id if quoted_docs else _hash(item.question)
            examples.append(b.abstain(item.question, others, origin=origin, group=group, quoted=quoted,
                                      meta={"item_id": item.id}))
            continue
        if not item.answers or not item.document:
            stats.skip("answerable item without answer or document")
            continue
        docs = _set_documents(b, item.document, item.meta.get("doc_id"))
        if not docs:
            stats.skip("the item's document is gone")
            continue
        readable = [d for d in docs if b.admitted(d)]
        if not readable:
            stats.dropped_acl += 1
            continue
        found = None
        for d in readable:
            found = _gold(b.chunks([d.doc_id]), item.sentence, item.answers)
            if found:
                break
        if found is None:
            stats.skip("no chunk of the document holds the sentence or an answer")
            continue
        gold, sentence = found
        others = b.distractors(item.question, want=passages - 1, exclude_doc=gold.doc_id, sentence=sentence,
                               source=None)
        ex = b.grounded(item.question, gold, sentence, others, origin=origin, meta={"item_id": item.id})
        if ex is not None:
            examples.append(ex)
    return examples, stats


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _renumber(answer: str, mapping: dict[int, int]) -> str:
    return _CITE_MARK.sub(lambda m: f"[{mapping.get(int(m.group(1)), 0)}]", answer)


def _from_quotes(answer: str, lang: str) -> str:
    """Extracted answers (``“quote” [n]`` lines) as grounded sentences."""
    lines = [_QUOTE_LINE.match(line.strip()) for line in answer.splitlines() if line.strip()]
    if not lines or not all(lines):
        return answer
    return (" " if lang == "en" else "").join(cite(m.group(1), int(m.group(2)), lang) for m in lines if m)


def _attach_citations(answer: str, passages: list[Passage], min_support: float) -> str:
    """A correction written without ``[n]``: each sentence cites the first passage that supports it."""
    if _CITE_MARK.search(answer):
        return answer
    lang = detect_language(answer)
    out = []
    for a, b in split_sentences(answer):
        sentence = answer[a:b].strip()
        if not sentence:
            continue
        n = next((p.n for p in passages
                  if check_answer(cite(sentence, p.n, lang), {p.n: p.text}, min_support=min_support).grounded), None)
        out.append(cite(sentence, n, lang) if n else sentence)
    return (" " if lang == "en" else "").join(out)


def from_feedback(ws: Workspace, audience: Sequence[str], *, share_questions: bool = False,
                  template_name: str | None = None,
                  count_tokens: CountTokens | None = None) -> tuple[list[Example], Stats]:
    """Examples from the users' rated answers: rated up, or corrected (a rejected candidate never).

    The prompt is rebuilt from the current text of the passages the answer was given on; an
    answer whose passages changed or went since is skipped. The target is the correction when
    there is one (citations added where the user wrote none), else the rated answer; it must pass
    :func:`check_answer`. A question is its asker's text: unless ``share_questions`` (the caller
    has decided the audience may see every asker's questions), only an audience of exactly
    ``user:<asker>`` may learn from it.
    """
    audience = parse_audience(audience)
    stats = Stats()
    b = _Builder(ws, audience, template_name=template_name, seed=0, count_tokens=count_tokens, stats=stats)
    with ws.catalog.session() as s:
        rejected = set(s.scalars(select(EvalCandidateRow.feedback_id).where(EvalCandidateRow.status == "rejected")))
        latest: dict[str, FeedbackRow] = {}
        for fb in s.scalars(select(FeedbackRow).order_by(FeedbackRow.id)):
            if fb.id not in rejected and (fb.rating > 0 or (fb.correction or "").strip()):
                latest[fb.lineage_id] = fb
        rated = [(fb.id, fb.correction, lin.user_id, lin.question, lin.decision, dict(lin.record or {}))
                 for fb in latest.values() if (lin := s.get(LineageRow, fb.lineage_id)) is not None]
    examples: list[Example] = []
    for fid, correction, asker, asked, decision, record in rated:
        if not share_questions and not document_admitted([f"user:{asker}"], audience):
            stats.dropped_acl += 1
            continue
        ex = _rated_example(b, record, (correction or "").strip(), decision, asked, {"feedback_id": fid})
        if ex is not None:
            examples.append(ex)
    return examples, stats


def _rated_example(b: _Builder, record: dict[str, Any], correction: str, decision: str, asked: str,
                   meta: dict[str, Any]) -> Example | None:
    """One rated answer as an example, its prompt rebuilt from the current text of its passages:
    the passages its answer needs (cited, or supporting the correction) and the best others."""
    stats = b.stats
    question = (record.get("retrieval") or {}).get("query") or asked
    hits = list((record.get("retrieval") or {}).get("hits") or [])
    limit = (record.get("prompt") or {}).get("passages") or b.ws.config.answer.prompt_passages
    docs = b.docs([h["doc_id"] for h in hits])
    current = {c.chunk_id: c for c in b.chunks(sorted({h["doc_id"] for h in hits}))}
    shown = [current[h["chunk_id"]] for h in hits if h["chunk_id"] in current]  # admitted and unchanged only
    withheld = any(not b.admitted(docs[h["doc_id"]]) for h in hits if docs[h["doc_id"]] is not None)
    lang = detect_language(question)
    answer = correction or str(record.get("answer") or "")
    if says_not_found(answer, NOT_FOUND) or (not correction and decision == "abstained"):
        if not shown:
            stats.skip("no admitted, unchanged passage")
            return None
        picked = shown[:limit]
        return b.example(question, b.passages(question, picked), picked, lang, NOT_FOUND, "abstain", "feedback",
                         picked[0].doc_id, (), meta)
    if correction:
        needed = [c.chunk_id for c in shown if any(b.supports(answer[x:y], c.text) for x, y in split_sentences(answer))]
        if not needed:
            if withheld:
                stats.dropped_acl += 1
            else:
                stats.dropped_check += 1
            return None
    else:
        needed = [str(c.get("chunk_id")) for c in record.get("citations") or []]
        for chunk_id in needed:
            hit = next((h for h in hits if h["chunk_id"] == chunk_id), None)
            if hit is None or docs[hit["doc_id"]] is None or (b.admitted(docs[hit["doc_id"]]) and chunk_id not in current):
                stats.skip("its passages changed or went since")
                return None
            if chunk_id not in current:
                stats.dropped_acl += 1
                return None
    others = [c for c in shown if c.chunk_id not in needed]
    keep = set(needed) | {c.chunk_id for c in others[: max(0, limit - len(set(needed)))]}
    picked = [c for c in shown if c.chunk_id in keep]
    passages = b.passages(question, picked)
    if not correction:  # renumber the product's citations to this prompt's order (extracted quotes too)
        position = {c.chunk_id: i + 1 for i, c in enumerate(picked)}
        mapping = {int(c["n"]): position.get(str(c.get("chunk_id")), 0) for c in record.get("citations") or []}
        answer = _renumber(_from_quotes(answer, lang), mapping)
    answer = _attach_citations(answer, passages, b.min_support)
    checked = check_answer(answer, {p.n: p.text for p in passages}, min_support=b.min_support)
    if not checked.grounded or checked.invalid_citations:
        stats.dropped_check += 1
        return None
    gold = picked[checked.cited[0] - 1].doc_id
    return b.example(question, passages, picked, lang, answer, "grounded", "feedback", gold, (), meta)


def from_file(path: str | Path, audience: Sequence[str], name: str | None = None) -> tuple[list[Example], Stats]:
    """Instruction examples from a user's JSONL file: ``{"messages": [...]}`` (chat),
    ``{"instruction", "input"?, "output"}`` (alpaca) or ``{"prompt", "completion"}``.

    Such examples name no document, so the guard cannot judge them (``documents=[]``, origin
    ``file:<name>``): taking them says that everyone in ``audience`` may see the file's whole
    content. That is the caller's explicit decision (``TuneDatasets.build`` asks for it). Every
    bad line is named in one :class:`ConfigError` and nothing is returned.
    """
    audience = parse_audience(audience)
    p = Path(path)
    name = name or p.name
    if not p.is_file():
        raise ConfigError(f"{p} is not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{p} is {p.stat().st_size // 2**20} MiB; a training file may be at most "
                          f"{MAX_FILE_BYTES // 2**20} MiB")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text ({exc}); save it as UTF-8") from None
    stats = Stats()
    examples: list[Example] = []
    errors: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = _file_messages(row)
        except json.JSONDecodeError as exc:
            errors.append(f"line {n}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except ConfigError as exc:
            errors.append(f"line {n}: {exc}")
            continue
        body = " ".join(m["content"] for m in messages)
        ex = Example(messages=messages, kind="instruction", lang=detect_language(body), origin=f"file:{name}",
                     documents=[], group=_hash(json.dumps(messages[:-1], ensure_ascii=False)), meta={"line": n})
        examples.append(ex)
        stats.add(ex)
    if errors:
        shown = errors[:_MAX_ERRORS_SHOWN] + ([f"... and {len(errors) - _MAX_ERRORS_SHOWN} more"]
                                              if len(errors) > _MAX_ERRORS_SHOWN else [])
        raise ConfigError(f"{name}: {len(errors)} line(s) are invalid; nothing was read:\n  " + "\n  ".join(shown))
    if not examples:
        raise ConfigError(f"{name} holds no examples")
    return examples, stats


def _file_messages(row: Any) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise ConfigError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ConfigError('"messages" must be a non-empty list')
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                    or not isinstance(m.get("content"), str):
                raise ConfigError(f'message {i + 1} must be {{"role": system|user|assistant, "content": text}}')
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in out):
            raise ConfigError("a chat must hold a user message and end with the assistant's")
        return out
    if "instruction" in row or "output" in row:
        instruction, extra, output = row.get("instruction"), row.get("input", ""), row.get("output")
        if not isinstance(instruction, str) or not isinstance(output, str) or not isinstance(extra, str):
            raise ConfigError('alpaca rows need text "instruction" and "output" (and optional text "input")')
        user = instruction + (f"\n\n{extra}" if extra.strip() else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if "prompt" in row or "completion" in row:
        prompt, completion = row.get("prompt"), row.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ConfigError('"prompt" and "completion" must both be text')
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    raise ConfigError('unknown format: use {"messages": [...]}, {"instruction", "input", "output"} or '
                      '{"prompt", "completion"}')


__all__ = ["KINDS", "Example", "Stats", "approx_tokens", "cite", "from_feedback", "from_file", "from_question_set",
           "grounded_from_corpus"]
