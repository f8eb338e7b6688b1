"""Grounded answers: retrieve as the user → score the evidence → prompt → generate → check → trace.

Every path ends in one of three decisions, and every one writes a lineage record:

- ``answered``: the LLM's answer passed the citation checks (each ``[n]`` names a passage
  retrieved for this user and that passage supports the sentence);
- ``extracted``: verbatim quotes of the best sentences, with citations: asked for with
  ``mode="extract"``, or the fallback when no LLM is configured, it failed, or its answer did
  not pass the checks (the reason says which);
- ``abstained``: the fixed, localised "not found in the sources you can access", when the
  evidence is weak or the model said the sources do not answer.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from sqlalchemy import select

from bastion.catalog.models import AnswerCacheRow, DocumentVersionRow, LineageRow
from bastion.core.config import AnswerConfig, LLMConfig
from bastion.core.errors import BastionError, ConfigError, GenerationError
from bastion.core.types import Hit, Principal
from bastion.generation.citations import check_answer, says_not_found
from bastion.generation.extract import candidate_sentences, rank_sentences, render_quotes, select_quotes
from bastion.generation.prompting import (
    ABSTAIN_MESSAGES,
    NOT_FOUND,
    Passage,
    PromptTemplate,
    detect_language,
    trim_passage,
)
from bastion.generation.protocol import LLM, ChatMessage, DecodingParams, OnToken
from bastion.retrieval.analyzer import analyze

MAX_QUESTION_CHARS = 4000


@dataclass
class Citation:
    n: int
    chunk_id: str
    document: str
    path: str
    page: int | None
    quote: str
    doc_id: str
    version_id: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    answer: str
    abstained: bool
    decision: str  # answered | extracted | abstained
    reason: str | None
    citations: list[Citation]
    lineage_id: str
    question: str
    rewritten_question: str | None
    language: str
    mode: str
    grounded: bool
    invalid_citations: int = 0
    cached: bool = False
    model: str | None = None
    timings_ms: dict = field(default_factory=dict)
    # open freshness / quality / parse / drift alerts of the cited sources (bastion.monitoring)
    warnings: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["citations"] = [c.to_dict() for c in self.citations]
        return d


def citation_grammar(n_passages: int, max_sentences: int = 5) -> str:
    """GBNF: sentences that each end in citations of 1..n, or the not-found marker."""
    nums = " | ".join(f'"{i}"' for i in range(1, n_passages + 1))
    return "\n".join([
        f'root ::= "{NOT_FOUND}" | sentence (" " sentence){{0,{max_sentences - 1}}}',
        r'sentence ::= [^\[\]\n【】]{2,400} cite+',
        f'cite ::= " "? "[" ({nums}) "]"',
    ])


class Answerer:
    """Answers questions for one workspace. ``llm`` is built lazily and only when needed."""

    def __init__(self, workspace, template: PromptTemplate, answer_cfg: AnswerConfig, llm_cfg: LLMConfig,
                 llm_provider: Callable[[], LLM] | None):
        self.ws = workspace
        self.template = template
        self.cfg = answer_cfg
        self.llm_cfg = llm_cfg
        self._llm_provider = llm_provider
        self._embed_cache = None

    # -- pieces ----------------------------------------------------------------------------
    def min_evidence(self, lang: str) -> float:
        if lang == "zh" and self.cfg.min_evidence_zh is not None:
            return self.cfg.min_evidence_zh
        return self.cfg.min_evidence

    def _llm(self) -> LLM:
        if self._llm_provider is None:
            raise GenerationError("no LLM is configured")
        return self._llm_provider()

    def _embed_passages(self, texts: list[str]):
        if self._embed_cache is None:
            from bastion.embedding.cache import CachedEmbedder

            self._embed_cache = CachedEmbedder(self.ws.embedder, self.ws.catalog, self.ws.config.embedder.batch_size)
        return self._embed_cache.embed(texts)

    def rewrite(self, question: str, history: list[ChatMessage], lang: str) -> tuple[str, str]:
        """A standalone question from a follow-up; (question, how)."""
        turns = history[-2 * self.cfg.history_turns:] if self.cfg.history_turns else []
        if not turns:
            return question, "none"
        try:
            llm = self._llm()
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
                     max_tokens: int) -> tuple[list[ChatMessage], list[Passage], dict]:
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
            history: list[ChatMessage] | None = None, source: str | None = None,
            on_token: OnToken | None = None) -> Answer:
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
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        lang = detect_language(question)
        record: dict = {"language": lang, "mode": mode}

        # 1. standalone question
        rewritten, how = self.rewrite(question, history or [], lang)
        timings["rewrite"] = time.perf_counter() - t0
        query = rewritten
        record["rewrite"] = how

        # 2. retrieval, as this principal
        t = time.perf_counter()
        hits = self.ws.search(query, principal, k=self.cfg.max_passages, source=source)
        timings["retrieve"] = time.perf_counter() - t

        # 3. evidence: the best sentence of the authorised passages
        t = time.perf_counter()
        ranked = rank_sentences(query, candidate_sentences([h.text for h in hits], query),
                                self.ws.embedder.embed_query, self._embed_passages)
        evidence = ranked[0].score if ranked else None
        threshold = self.min_evidence(lang)
        timings["evidence"] = time.perf_counter() - t
        record["retrieval"] = {"query": query, "k": self.cfg.max_passages, "source": source,
                               "hits": self._hit_records(hits), "evidence": evidence,
                               "min_evidence": threshold,
                               "candidates": [[round(x.cosine, 4), round(x.coverage, 4)] for x in ranked]}

        def finish(answer: Answer, extra: dict | None = None) -> Answer:
            timings["total"] = time.perf_counter() - t0
            answer.timings_ms = {k: round(v * 1000, 1) for k, v in timings.items() if v is not None}
            record.update(extra or {})
            record["timings_ms"] = answer.timings_ms
            record["answer"] = answer.answer
            record["citations"] = [c.to_dict() for c in answer.citations]
            record["grounded"] = answer.grounded
            answer.warnings = self.ws.monitor.warnings_for([c.doc_id for c in answer.citations])
            record["warnings"] = answer.warnings
            self._write_lineage(answer, principal, record)
            return answer

        def abstain(reason: str, **extra) -> Answer:
            a = Answer(ABSTAIN_MESSAGES[lang], True, "abstained", reason, [], uuid.uuid4().hex, question,
                       rewritten if how != "none" else None, lang, mode, grounded=False, **extra)
            return finish(a)

        if not hits:
            return abstain("no authorised passage matched the question")
        if evidence is None or evidence < threshold:
            shown = "none" if evidence is None else f"{evidence:.3f}"
            return abstain(f"weak evidence: best sentence scores {shown} < answer.min_evidence {threshold}")

        def extracted(reason: str | None) -> Answer:
            quotes = select_quotes(ranked, max_quotes=self.cfg.max_quotes)
            cites = [self._citation(q.n, hits[q.n - 1], q.text) for q in quotes]
            renumber = {c.n: i + 1 for i, c in enumerate(_unique_by_n(cites))}
            quotes = [replace(q, n=renumber[q.n]) for q in quotes]
            cites = [Citation(renumber[c.n], c.chunk_id, c.document, c.path, c.page, c.quote, c.doc_id, c.version_id)
                     for c in _unique_by_n(cites)]
            a = Answer(render_quotes(quotes, lang), False, "extracted", reason, cites, uuid.uuid4().hex, question,
                       rewritten if how != "none" else None, lang, mode, grounded=True)
            return a

        if mode == "extract":
            return finish(extracted(None))

        # 4. the LLM
        try:
            llm = self._llm()
        except BastionError as exc:
            return finish(extracted(f"no LLM available ({exc}); answered with verbatim quotes"))
        t = time.perf_counter()
        try:
            params = self._decoding(min(len(hits), self.cfg.prompt_passages), llm)
            messages, passages, prompt_info = self.build_prompt(query, hits, lang, llm, params.max_tokens)
            params = self._decoding(len(passages), llm)
        except GenerationError as exc:
            return finish(extracted(f"prompt could not be built ({exc})"))
        timings["prompt"] = time.perf_counter() - t
        model_rec = {"id": llm.id, "sha256": llm.sha256, "context_window": llm.context_window}
        prompt_rec = {"template": self.template.template_id, "version": self.template.version,
                      "digest": self.template.digest, **prompt_info}
        record.update(model=model_rec, prompt=prompt_rec, decoding=params.to_record())
        key = self._cache_key(question, query, hits[: len(passages)], llm, params)
        record["cache_key"] = key
        if self.cfg.cache and (cached := self._cache_get(key)) is not None:
            cached.update(lineage_id=uuid.uuid4().hex, cached=True, question=question)
            ans = _answer_from_dict(cached)
            if on_token:
                on_token(ans.answer)
            return finish(ans, {"cache_hit": True})

        try:
            # always stream, so the time to the first token is measured
            gen = llm.generate(messages, params, on_token or (lambda _t: None))
        except GenerationError as exc:
            timings["generate"] = time.perf_counter() - t
            return finish(extracted(f"the LLM failed ({exc}); answered with verbatim quotes"), {"llm_error": str(exc)})
        timings["first_token"] = gen.first_token_s
        timings["generate"] = gen.total_s
        record["tokens"] = {"prompt": gen.prompt_tokens, "completion": gen.completion_tokens}
        record["raw_answer"] = gen.text
        record["finish_reason"] = gen.finish_reason

        # 5. checks
        if says_not_found(gen.text, NOT_FOUND):
            ans = Answer(ABSTAIN_MESSAGES[lang], True, "abstained", "the model found no answer in the sources", [],
                         uuid.uuid4().hex, question, rewritten if how != "none" else None, lang, mode,
                         grounded=False, model=llm.id)
        else:
            checked = check_answer(gen.text, {p.n: p.text for p in passages}, min_support=self.cfg.min_support)
            record["checks"] = {"invalid_citations": checked.invalid_citations, "invalid_detail": checked.invalid_detail,
                                "grounded": checked.grounded}
            if checked.grounded:
                cites = [self._citation(n, hits[n - 1], _best_quote(passages[n - 1].text, checked, n))
                         for n in checked.cited]
                ans = Answer(checked.text, False, "answered", None, cites, uuid.uuid4().hex, question,
                             rewritten if how != "none" else None, lang, mode, grounded=True,
                             invalid_citations=checked.invalid_citations, model=llm.id)
            else:
                why = ("the model cited no source" if not any(c.cited for c in checked.claims) and not checked.invalid_citations
                       else f"{checked.invalid_citations} citation(s) failed the check and "
                            f"{sum(1 for c in checked.claims if not c.supported)} sentence(s) were unsupported")
                ans = extracted(f"the model's answer was not grounded ({why}); answered with verbatim quotes")
                ans.invalid_citations = checked.invalid_citations
                ans.model = llm.id
        if self.cfg.cache:
            self._cache_put(key, ans)
        return finish(ans)

    # -- records ---------------------------------------------------------------------------
    def _citation(self, n: int, hit: Hit, quote: str) -> Citation:
        return Citation(n, hit.chunk_id, hit.document, hit.path, hit.page, quote, hit.doc_id, hit.version_id)

    def _hit_records(self, hits: list[Hit]) -> list[dict]:
        hashes = {}
        if hits:
            with self.ws.catalog.session() as s:
                rows = s.execute(select(DocumentVersionRow.id, DocumentVersionRow.content_hash)
                                 .where(DocumentVersionRow.id.in_({h.version_id for h in hits})))
                hashes = dict(rows.all())
        return [{"n": i + 1, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "version_id": h.version_id,
                 "content_hash": hashes.get(h.version_id), "score": round(h.score, 6), "path": h.path,
                 "page": h.page} for i, h in enumerate(hits)]

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

    def _cache_get(self, key: str) -> dict | None:
        with self.ws.catalog.session() as s:
            row = s.get(AnswerCacheRow, key)
            return dict(row.answer) if row else None

    def _cache_put(self, key: str, ans: Answer) -> None:
        d = ans.to_dict()
        d.pop("timings_ms", None)
        with self.ws.catalog.session(write=True) as s:
            s.merge(AnswerCacheRow(key=key, answer=d))

    def _write_lineage(self, ans: Answer, principal: Principal, record: dict) -> None:
        with self.ws.catalog.session(write=True) as s:
            s.add(LineageRow(id=ans.lineage_id, user_id=principal.user_id, principal=sorted(principal.labels()),
                             question=ans.question, rewritten_question=ans.rewritten_question, mode=ans.mode,
                             decision=ans.decision, reason=ans.reason,
                             record=record | {"invalid_citations": ans.invalid_citations, "cached": ans.cached}))


def _unique_by_n(cites: list[Citation]) -> list[Citation]:
    seen: dict[int, Citation] = {}
    for c in cites:
        if c.n in seen:
            seen[c.n] = Citation(c.n, c.chunk_id, c.document, c.path, c.page, seen[c.n].quote + " … " + c.quote,
                                 c.doc_id, c.version_id)
        else:
            seen[c.n] = c
    return [seen[n] for n in sorted(seen)]


def _best_quote(passage_text: str, checked, n: int) -> str:
    """The passage sentence that shares most terms with the claims citing passage ``n``."""
    from bastion.chunking.chunker import split_sentences

    claim_terms = set()
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


def _answer_from_dict(d: dict) -> Answer:
    d = dict(d)
    d["citations"] = [Citation(**c) for c in d.get("citations", [])]
    d.setdefault("timings_ms", {})
    return Answer(**d)


__all__ = ["Answer", "Answerer", "Citation", "citation_grammar"]
