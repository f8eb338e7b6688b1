"""Grounded answers: retrieve as the user → score the evidence → prompt → generate → check → trace.

Every path ends in one of three decisions, and every one writes a lineage record:

- ``answered``: the LLM's answer passed the citation checks (each ``[n]`` names a passage
  retrieved for this user and that passage supports the sentence);
- ``extracted``: verbatim quotes of the best sentences, with citations: asked for with
  ``mode="extract"``, or the fallback when no LLM is configured, it failed, or its answer did
  not pass the checks (the reason says which);
- ``abstained``: the fixed, localised "not found in the sources you can access", when the
  evidence is weak or the model said the sources do not answer.

The :class:`Answerer` holds no workspace: it is given a search function (which applies the
asker's access rights), the embedder, an :class:`~bastion.generation.records.AnswerRecords`
(cache, version hashes, lineage) and a function that returns the data-health warnings of the
cited documents.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from bastion.core.config import AnswerConfig, LLMConfig
from bastion.core.errors import BastionError, ConfigError, GenerationError
from bastion.core.types import Hit, Principal
from bastion.generation.citations import CheckedAnswer, check_answer, says_not_found
from bastion.generation.duplicates import Copies, merge_identical, merge_quotes, numbered_hits, source_refs
from bastion.generation.extract import Sentence, candidate_sentences, rank_sentences, render_quotes, select_quotes
from bastion.generation.prompting import (
    ABSTAIN_MESSAGES,
    NOT_FOUND,
    Passage,
    PromptTemplate,
    detect_language,
    trim_passage,
)
from bastion.generation.protocol import LLM, ChatMessage, DecodingParams, OnToken
from bastion.generation.records import AnswerRecords
from bastion.generation.results import Answer, Citation
from bastion.generation.streaming import CheckedStream
from bastion.retrieval.analyzer import analyze

if TYPE_CHECKING:
    import numpy as np

    from bastion.embedding.cache import CachedEmbedder
    from bastion.embedding.protocol import Embedder

MAX_QUESTION_CHARS = 4000


class SearchFn(Protocol):
    """Retrieval as ``principal``: only passages whose ACL admits them (``Workspace.search``)."""

    def __call__(self, query: str, principal: Principal, k: int | None = None, *,
                 source: str | list[str] | None = None) -> list[Hit]: ...


# doc ids of the cited passages -> open alerts of their sources (``Monitor.warnings_for``)
WarningsFn = Callable[[list[str]], list[dict[str, Any]]]


def citation_grammar(n_passages: int, max_sentences: int = 5) -> str:
    """GBNF: sentences that each end in citations of 1..n, or the not-found marker."""
    nums = " | ".join(f'"{i}"' for i in range(1, n_passages + 1))
    return "\n".join([
        f'root ::= "{NOT_FOUND}" | sentence (" " sentence){{0,{max_sentences - 1}}}',
        r'sentence ::= [^\[\]\n【】]{2,400} cite+',
        f'cite ::= " "? "[" ({nums}) "]"',
    ])


@dataclass
class _Question:
    """One ``ask`` call as it moves through the steps: what was asked, what was found, the
    lineage record being built and the time each step took."""

    text: str
    principal: Principal
    mode: str
    source: str | list[str] | None
    lang: str
    started: float
    query: str = ""  # the standalone question that was searched
    rewrite: str = "none"  # how it was made: none | llm | concatenated
    hits: list[Hit] = field(default_factory=list)  # distinct passages: identical text kept once
    copies: Copies = field(default_factory=dict)  # the other passages with a kept passage's text
    ranked: list[Sentence] = field(default_factory=list)
    evidence: float | None = None
    threshold: float = 0.0
    timings: dict[str, float | None] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def rewritten_question(self) -> str | None:
        return self.query if self.rewrite != "none" else None


@dataclass(frozen=True)
class _Prompt:
    messages: list[ChatMessage]
    passages: list[Passage]
    params: DecodingParams
    cache_key: str


class Answerer:
    """Answers questions with one template, answer settings and model.

    The LLM (``llm_provider``) and the embedder (``embedder``) are providers, called only when
    needed, so a question that fails validation or is answered by extraction loads no model.
    """

    def __init__(self, template: PromptTemplate, answer_cfg: AnswerConfig, llm_cfg: LLMConfig,
                 llm_provider: Callable[[], LLM] | None, *, search: SearchFn, embedder: Callable[[], Embedder],
                 records: AnswerRecords, warnings_for: WarningsFn,
                 llm_for: Callable[[Principal], LLM] | None = None):
        self.template = template
        self.cfg = answer_cfg
        self.llm_cfg = llm_cfg
        self._llm_provider = llm_provider
        # the model for one asker: the base model, or an adapter whose audience admits them
        self._llm_for = llm_for
        self._search = search
        self._embedder = embedder
        self.records = records
        self._warnings_for = warnings_for
        self._embed_cache: CachedEmbedder | None = None

    # -- pieces ----------------------------------------------------------------------------
    def min_evidence(self, lang: str) -> float:
        if lang == "zh" and self.cfg.min_evidence_zh is not None:
            return self.cfg.min_evidence_zh
        return self.cfg.min_evidence

    def _llm(self, principal: Principal | None = None) -> LLM:
        if self._llm_provider is None:
            raise GenerationError("no LLM is configured")
        if principal is not None and self._llm_for is not None:
            return self._llm_for(principal)
        return self._llm_provider()

    def _embed_passages(self, texts: list[str]) -> np.ndarray:
        if self._embed_cache is None:
            self._embed_cache = self.records.embedding_cache(self._embedder())
        return self._embed_cache.embed(texts)

    def rewrite(self, question: str, history: list[ChatMessage], lang: str,
                principal: Principal | None = None) -> tuple[str, str]:
        """A standalone question from a follow-up; (question, how)."""
        turns = history[-2 * self.cfg.history_turns:] if self.cfg.history_turns else []
        if not turns:
            return question, "none"
        try:
            llm = self._llm(principal)
            gen = llm.generate(self.template.rewrite_messages(turns, question, lang),
                               DecodingParams(temperature=0.0, seed=self.llm_cfg.seed, max_tokens=96))
            text = gen.text.strip().strip('"“”').splitlines()[0].strip() if gen.text.strip() else ""
            if 3 <= len(text) <= 4 * len(question) + 400:
                return text, "llm"
        except BastionError:
            pass
        last_user = next((m.content for m in reversed(turns) if m.role == "user"), "")
        return (f"{last_user} {question}".strip(), "concatenated")

    def _decoding(self, n_passages: int, llm: LLM) -> DecodingParams:
        grammar = citation_grammar(n_passages) if self.llm_cfg.grammar and n_passages else None
        return DecodingParams(temperature=self.llm_cfg.temperature, seed=self.llm_cfg.seed,
                              max_tokens=self.llm_cfg.max_tokens, repeat_penalty=self.llm_cfg.repeat_penalty,
                              grammar=grammar)

    def build_prompt(self, question: str, hits: list[Hit], lang: str, llm: LLM,
                     max_tokens: int) -> tuple[list[ChatMessage], list[Passage], dict[str, int]]:
        """Fit the top passages, trimmed, into the model's context window."""
        count = llm.count_tokens
        empty = self.template.messages(question, [], lang)
        fixed = sum(count(m.content) + 8 for m in empty)
        budget = llm.context_window - max_tokens - fixed - 64
        if budget <= 0:
            raise ConfigError(f"the model's context window ({llm.context_window} tokens) cannot hold the prompt and a "
                              f"{max_tokens}-token answer; raise llm.context_window or lower llm.max_tokens")
        q_terms = set(analyze(question))
        passages: list[Passage] = []
        used = 0
        for hit in hits[: self.cfg.prompt_passages]:
            share = min(self.cfg.passage_tokens, budget - used)
            if share < 24:
                break
            text = " ".join(trim_passage(hit.text, q_terms, share, count).split())
            cost = count(text) + count(hit.document) + 6
            if used + cost > budget:
                break
            passages.append(Passage(len(passages) + 1, hit.document, text))
            used += cost
        info = {"budget_tokens": budget, "passage_tokens": used, "fixed_tokens": fixed,
                "passages": len(passages), "trimmed": sum(1 for p, h in zip(passages, hits) if p.text != " ".join(h.text.split()))}
        return self.template.messages(question, passages, lang), passages, info

    # -- the pipeline ----------------------------------------------------------------------
    def ask(self, question: str, principal: Principal, *, mode: str | None = None,
            history: list[ChatMessage] | None = None, source: str | list[str] | None = None,
            on_token: OnToken | None = None) -> Answer:
        """Answer ``question`` from the passages ``principal`` may read (``source``: one source
        name or several); ``on_token`` receives the model's draft as it streams."""
        q = self._start(question, principal, mode, source)
        self._retrieve(q, history or [])
        self._score_evidence(q)
        weakness = self._weakness(q)
        if weakness is not None:
            return self._finish(q, self._abstention(q, weakness))
        if q.mode == "extract":
            return self._finish(q, self._extracted(q, None))
        return self._generate(q, on_token)

    def _start(self, question: str, principal: Principal, mode: str | None,
               source: str | list[str] | None) -> _Question:
        """Validate the request; the clock starts here."""
        if not isinstance(principal, Principal):
            raise TypeError("ask() needs a Principal; get one with workspace.principal(user_id)")
        if not isinstance(question, str) or not question.strip():
            raise ConfigError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ConfigError(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
        mode = mode or self.cfg.mode
        if mode not in ("answer", "extract"):
            raise ConfigError(f"unknown answer mode {mode!r}: use 'answer' or 'extract'")
        question = question.strip()
        started = time.perf_counter()
        lang = detect_language(question)
        q = _Question(text=question, principal=principal, mode=mode, source=source, lang=lang, started=started)
        q.record.update(language=lang, mode=mode)
        return q

    def _retrieve(self, q: _Question, history: list[ChatMessage]) -> None:
        """A standalone question from a follow-up, then retrieval as the asker."""
        q.query, q.rewrite = self.rewrite(q.text, history, q.lang, q.principal)
        q.timings["rewrite"] = time.perf_counter() - q.started
        q.record["rewrite"] = q.rewrite
        t = time.perf_counter()
        q.hits, q.copies = merge_identical(self._search(q.query, q.principal, k=self.cfg.max_passages,
                                                        source=q.source))
        q.timings["retrieve"] = time.perf_counter() - t

    def _score_evidence(self, q: _Question) -> None:
        """The evidence: the best sentence of the authorised passages, scored against the question."""
        t = time.perf_counter()
        q.ranked = rank_sentences(q.query, candidate_sentences([h.text for h in q.hits], q.query),
                                  self._embedder().embed_query, self._embed_passages)
        q.evidence = q.ranked[0].score if q.ranked else None
        q.threshold = self.min_evidence(q.lang)
        q.timings["evidence"] = time.perf_counter() - t
        numbered = numbered_hits(q.hits, q.copies)
        hit_records = self.records.hit_records([h for _, h in numbered])
        for record, (n, _) in zip(hit_records, numbered):
            record["n"] = n  # a copy of a passage's text shares its number
        q.record["retrieval"] = {"query": q.query, "k": self.cfg.max_passages, "source": q.source,
                                 "hits": hit_records, "evidence": q.evidence,
                                 "min_evidence": q.threshold,
                                 "candidates": [[round(x.cosine, 4), round(x.coverage, 4)] for x in q.ranked]}

    @staticmethod
    def _weakness(q: _Question) -> str | None:
        """Why the evidence cannot support an answer, or None when it can."""
        if not q.hits:
            return "no authorised passage matched the question"
        if q.evidence is None or q.evidence < q.threshold:
            shown = "none" if q.evidence is None else f"{q.evidence:.3f}"
            return f"weak evidence: best sentence scores {shown} < answer.min_evidence {q.threshold}"
        return None

    def _generate(self, q: _Question, on_token: OnToken | None) -> Answer:
        """Prompt the LLM (or serve the cached answer), then check what it wrote; any failure
        falls back to verbatim quotes."""
        try:
            llm = self._llm(q.principal)
        except BastionError as exc:
            return self._finish(q, self._extracted(q, f"no LLM available ({exc}); answered with verbatim quotes"))
        t = time.perf_counter()
        try:
            prompt = self._prompt(q, llm)
        except GenerationError as exc:
            return self._finish(q, self._extracted(q, f"prompt could not be built ({exc})"))
        q.timings["prompt"] = time.perf_counter() - t
        if self.cfg.cache and (cached := self.records.cached(prompt.cache_key)) is not None:
            return self._from_cache(q, cached, on_token)
        if isinstance(on_token, CheckedStream):  # it releases each sentence once it passed the checks below
            on_token.begin({p.n: p.text for p in prompt.passages}, self.cfg.min_support)
        try:
            # always stream, so the time to the first token is measured
            gen = llm.generate(prompt.messages, prompt.params, on_token or _ignore_token)
        except GenerationError as exc:
            q.timings["generate"] = time.perf_counter() - t
            return self._finish(q, self._extracted(q, f"the LLM failed ({exc}); answered with verbatim quotes"),
                                {"llm_error": str(exc)})
        q.timings["first_token"] = gen.first_token_s
        q.timings["generate"] = gen.total_s
        q.record["tokens"] = {"prompt": gen.prompt_tokens, "completion": gen.completion_tokens}
        q.record["raw_answer"] = gen.text
        q.record["finish_reason"] = gen.finish_reason
        ans = self._check(q, gen.text, prompt.passages, llm.id)
        if self.cfg.cache:
            self.records.cache(prompt.cache_key, ans)
        return self._finish(q, ans)

    def _prompt(self, q: _Question, llm: LLM) -> _Prompt:
        """The messages, decoding parameters and cache key for this question and model."""
        params = self._decoding(min(len(q.hits), self.cfg.prompt_passages), llm)
        messages, passages, prompt_info = self.build_prompt(q.query, q.hits, q.lang, llm, params.max_tokens)
        params = self._decoding(len(passages), llm)
        q.record.update(
            model={"id": llm.id, "sha256": llm.sha256, "context_window": llm.context_window,
                   "adapter": getattr(llm, "adapter", None)},
            prompt={"template": self.template.template_id, "version": self.template.version,
                    "digest": self.template.digest, **prompt_info},
            decoding=params.to_record())
        # the copies are evidence too: their sources are cited, so only who retrieved the same copies shares the entry
        evidence = [h for _, h in numbered_hits(q.hits[: len(passages)], q.copies)]
        key = self._cache_key(q.text, q.query, evidence, llm, params)
        q.record["cache_key"] = key
        return _Prompt(messages=messages, passages=passages, params=params, cache_key=key)

    def _from_cache(self, q: _Question, cached: dict[str, Any], on_token: OnToken | None) -> Answer:
        """The cached answer to the same question on the same evidence, with its own lineage id."""
        cached.update(lineage_id=uuid.uuid4().hex, cached=True, question=q.text)
        ans = Answer.from_dict(cached)
        if on_token:
            on_token(ans.answer)
        return self._finish(q, ans, {"cache_hit": True})

    def _check(self, q: _Question, text: str, passages: list[Passage], model: str) -> Answer:
        """Keep the model's answer only if its citations hold; else quote the sources verbatim."""
        if says_not_found(text, NOT_FOUND):
            return self._abstention(q, "the model found no answer in the sources", model=model)
        checked = check_answer(text, {p.n: p.text for p in passages}, min_support=self.cfg.min_support)
        q.record["checks"] = {"invalid_citations": checked.invalid_citations, "invalid_detail": checked.invalid_detail,
                              "grounded": checked.grounded}
        if checked.grounded:
            cites = [_citation(n, q.hits[n - 1], _best_quote(passages[n - 1].text, checked, n), q.copies)
                     for n in checked.cited]
            return self._answer(q, text=checked.text, decision="answered", reason=None, citations=cites,
                                invalid_citations=checked.invalid_citations, model=model)
        ans = self._extracted(q, f"the model's answer was not grounded ({_ungrounded(checked)}); "
                                 "answered with verbatim quotes")
        ans.invalid_citations = checked.invalid_citations
        ans.model = model
        return ans

    def _finish(self, q: _Question, answer: Answer, extra: dict[str, Any] | None = None) -> Answer:
        """Stop the clock, attach the cited sources' warnings and write the lineage entry."""
        q.timings["total"] = time.perf_counter() - q.started
        answer.timings_ms = {k: round(v * 1000, 1) for k, v in q.timings.items() if v is not None}
        answer.adapter = (q.record.get("model") or {}).get("adapter")
        q.record.update(extra or {})
        q.record["timings_ms"] = answer.timings_ms
        q.record["answer"] = answer.answer
        q.record["citations"] = [c.to_dict() for c in answer.citations]
        q.record["grounded"] = answer.grounded
        answer.warnings = self._warnings_for([c.doc_id for c in answer.citations])
        q.record["warnings"] = answer.warnings
        self.records.trace(answer, q.principal, q.record)
        return answer

    # -- the three kinds of answer ---------------------------------------------------------
    def _answer(self, q: _Question, *, text: str, decision: str, reason: str | None, citations: list[Citation],
                invalid_citations: int = 0, model: str | None = None) -> Answer:
        abstained = decision == "abstained"
        return Answer(answer=text, abstained=abstained, decision=decision, reason=reason, citations=citations,
                      lineage_id=uuid.uuid4().hex, question=q.text, rewritten_question=q.rewritten_question,
                      language=q.lang, mode=q.mode, grounded=not abstained, invalid_citations=invalid_citations,
                      model=model)

    def _abstention(self, q: _Question, reason: str, *, model: str | None = None) -> Answer:
        return self._answer(q, text=ABSTAIN_MESSAGES[q.lang], decision="abstained", reason=reason, citations=[],
                            model=model)

    def _extracted(self, q: _Question, reason: str | None) -> Answer:
        """Verbatim quotes of the best sentences, each cited, numbered in order of first citation; a
        quote found in several passages is shown once, its citation listing all their sources."""
        quotes, also = merge_quotes(select_quotes(q.ranked, max_quotes=self.cfg.max_quotes))
        cites = _unique_by_n([_citation(s.n, q.hits[s.n - 1], s.text, q.copies,
                                        [q.hits[m - 1] for m in also.get(s.n, [])]) for s in quotes])
        renumber = {c.n: i + 1 for i, c in enumerate(cites)}
        quotes = [replace(s, n=renumber[s.n]) for s in quotes]
        cites = [replace(c, n=renumber[c.n]) for c in cites]
        return self._answer(q, text=render_quotes(quotes, q.lang), decision="extracted", reason=reason,
                            citations=cites)

    # -- records ---------------------------------------------------------------------------
    def _cache_key(self, question: str, query: str, hits: list[Hit], llm: LLM, params: DecodingParams) -> str:
        material = {
            "question": " ".join(question.split()),
            "query": " ".join(query.split()),
            "evidence": [[h.chunk_id, h.version_id] for h in hits],
            "model": llm.id,
            "prompt": [self.template.ref, self.template.digest],
            "decoding": params.to_record() | {"grammar": params.grammar},
            "checks": [self.cfg.min_support, self.cfg.min_evidence, self.cfg.min_evidence_zh, self.cfg.max_quotes],
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Assistant:
    """A named assistant of the workspace: its answerer and the sources it answers from
    (``None``: every source the asker may read)."""

    answerer: Answerer
    sources: list[str] | None


def _ignore_token(_token: str) -> None:
    pass


def _citation(n: int, hit: Hit, quote: str, copies: Copies, also: list[Hit] | None = None) -> Citation:
    """Passage ``n`` cited with ``quote``; its sources: the passage, its copies, and the passages ``also``
    holding the same quote (with their copies)."""
    sources = source_refs(hit, copies) + [ref for other in also or [] for ref in source_refs(other, copies)]
    return Citation(n=n, chunk_id=hit.chunk_id, document=hit.document, path=hit.path, page=hit.page, quote=quote,
                    doc_id=hit.doc_id, version_id=hit.version_id, sources=sources)


def _unique_by_n(cites: list[Citation]) -> list[Citation]:
    """One citation per passage number, quotes of the same passage joined with " … " (and their sources)."""
    seen: dict[int, Citation] = {}
    for c in cites:
        if c.n in seen:
            known = {s["chunk_id"] for s in seen[c.n].sources}
            seen[c.n] = replace(seen[c.n], quote=seen[c.n].quote + " … " + c.quote,
                                sources=seen[c.n].sources + [s for s in c.sources if s["chunk_id"] not in known])
        else:
            seen[c.n] = c
    return [seen[n] for n in sorted(seen)]


def _ungrounded(checked: CheckedAnswer) -> str:
    if not any(c.cited for c in checked.claims) and not checked.invalid_citations:
        return "the model cited no source"
    unsupported = sum(1 for c in checked.claims if not c.supported)
    return (f"{checked.invalid_citations} citation(s) failed the check and "
            f"{unsupported} sentence(s) were unsupported")


def _best_quote(passage_text: str, checked: CheckedAnswer, n: int) -> str:
    """The passage sentence that shares most terms with the claims citing passage ``n``."""
    from bastion.chunking.chunker import split_sentences

    claim_terms: set[str] = set()
    for c in checked.claims:
        if n in c.cited:
            claim_terms |= set(analyze(c.text))
    best, best_score = passage_text[:300], -1
    for a, b in split_sentences(passage_text):
        s = passage_text[a:b].strip()
        score = len(claim_terms & set(analyze(s)))
        if score > best_score:
            best, best_score = s, score
    return best


__all__ = ["Answerer", "Assistant", "MAX_QUESTION_CHARS", "SearchFn", "WarningsFn", "citation_grammar"]
