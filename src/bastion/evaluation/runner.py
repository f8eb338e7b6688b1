"""Asking a question set under configurations, and measuring what it cost.

Each item is asked as its asker (or the run's default asker) through the product's own path:
``extract`` and ``answer`` go through :class:`~bastion.generation.answer.Answerer` (retrieval with
the asker's access rights, evidence, prompt, citation checks, lineage); ``prompt-only`` asks the
model the bare question with no sources, the baseline that shows what retrieval adds and what a
model recalls on its own. The answer cache is off, so timings are real.

Per configuration the runner also measures the process's CPU seconds and peak resident memory
while it runs (an HTTP model's server is not in this process: its cost is not counted).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.core.errors import BastionError
from bastion.evaluation.configs import EvalConfig
from bastion.evaluation.items import EvalItem, Outcome
from bastion.generation.citations import says_not_found
from bastion.generation.prompting import ABSTAIN_MESSAGES, NOT_FOUND, detect_language
from bastion.generation.protocol import ChatMessage, DecodingParams

if TYPE_CHECKING:
    from bastion.core.types import Principal
    from bastion.evaluation.judge import Judge
    from bastion.generation.answer import Answerer
    from bastion.workspace import Workspace

Progress = Callable[[str, int, int], None]  # (configuration, items done, items in all)

PROMPT_ONLY_SYSTEM = {
    "en": f"Answer the question briefly and factually from what you know. If you do not know, reply exactly {NOT_FOUND}.",
    "zh": f"请根据你所知简短、准确地回答问题。如果不知道，请只回复 {NOT_FOUND}。",
}


@dataclass
class ConfigResult:
    """One configuration's outcomes and the resources it used."""

    name: str
    spec: EvalConfig
    fingerprint: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float | None = None


class _PeakMemory:
    """Samples this process's resident memory in a thread while a block runs."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bastion-eval-rss", daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(self.every_s)

    def __enter__(self) -> _PeakMemory:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


class Runner:
    """Asks items under one resolved configuration of a workspace."""

    def __init__(self, ws: Workspace, name: str, spec: EvalConfig, *, default_asker: str | None,
                 repeat: int = 0, judge: Judge | None = None):
        self.ws, self.name, self.spec = ws, name, spec
        self.default_asker, self.repeat, self.judge = default_asker, repeat, judge
        self._principals: dict[str, Principal] = {}
        self._answerer: Answerer | None = None

    def answerer(self) -> Answerer:
        if self._answerer is None:
            s = self.spec
            cfg = self.ws.config.answer.model_copy(update={
                "mode": "extract" if s.approach == "extract" else "answer", "prompt": s.prompt, "cache": False,
                "max_passages": s.k, "prompt_passages": min(s.max_passages or 1, s.k or 1),
                "min_evidence": s.min_evidence})
            if s.min_evidence is not None and s.min_evidence != self.ws.config.answer.min_evidence:
                cfg = cfg.model_copy(update={"min_evidence_zh": None})  # one threshold for every language
            self._answerer = self.ws.build_answerer(cfg, model=s.model, search_mode=s.search_mode, adapter=s.adapter)
        return self._answerer

    def principal(self, user_id: str) -> Principal:
        if user_id not in self._principals:
            self._principals[user_id] = self.ws.principal(user_id)
        return self._principals[user_id]

    def run(self, items: Sequence[EvalItem], progress: Progress | None = None) -> ConfigResult:
        from bastion.evaluation.fingerprint import fingerprint

        result = ConfigResult(self.name, self.spec, fingerprint(self.ws, self.spec))
        cpu, wall = time.process_time(), time.perf_counter()
        with _PeakMemory() as mem:
            for i, item in enumerate(items, 1):
                result.outcomes.append(self.ask(item, repeat=i <= self.repeat))
                if progress:
                    progress(self.name, i, len(items))
        result.cpu_seconds = time.process_time() - cpu
        result.seconds = time.perf_counter() - wall
        result.peak_rss_mb = round(mem.peak / 2**20, 1) if mem.peak else None
        self._similarities(result.outcomes)
        if self.judge is not None:
            for o in result.outcomes:
                if o.error is None and o.item.kind == "answerable" and o.item.answers and not o.abstained:
                    o.judge = self.judge.verdict(o.item, o.answer)
        return result

    def ask(self, item: EvalItem, *, repeat: bool = False) -> Outcome:
        asker = item.asker or self.default_asker
        if not asker:
            return Outcome(item=item, answer="", decision="abstained",
                           error="the item names no asker and the run has no default; use --as USER")
        try:
            principal = self.principal(asker)
            outcome = self._prompt_only(item, principal) if self.spec.approach == "prompt-only" else self._grounded(item, principal)
            if repeat:
                again = (self._prompt_only(item, principal) if self.spec.approach == "prompt-only"
                         else self._grounded(item, principal))
                outcome.repeat_answer = again.answer
        except BastionError as exc:
            return Outcome(item=item, answer="", decision="abstained", error=f"{type(exc).__name__}: {exc}")
        return outcome

    def _grounded(self, item: EvalItem, principal: Principal) -> Outcome:
        a = self.answerer().ask(item.question, principal)
        rec = self.ws.lineage(a.lineage_id)
        tokens = rec.get("tokens") or {}
        unreadable = sum(1 for c in a.citations if self.ws.documents.readable(principal, c.doc_id) is None)
        t = a.timings_ms
        return Outcome(item=item, answer=a.answer, decision=a.decision, reason=a.reason,
                       cited_paths=[c.path for c in a.citations], quotes=[c.quote for c in a.citations],
                       model_answered="checks" in rec, grounded=a.decision == "answered",
                       unreadable_citations=unreadable, total_ms=t.get("total", 0.0), first_token_ms=t.get("first_token"),
                       generate_ms=t.get("generate"), completion_tokens=tokens.get("completion"), lineage_id=a.lineage_id)

    def _prompt_only(self, item: EvalItem, principal: Principal) -> Outcome:
        lang = detect_language(item.question)
        llm = self.ws.llm_for(principal, self.spec.model, adapter=self.spec.adapter)
        c = self.ws.config.llm
        started = time.perf_counter()
        gen = llm.generate([ChatMessage("system", PROMPT_ONLY_SYSTEM[lang]), ChatMessage("user", item.question)],
                           DecodingParams(temperature=c.temperature, seed=c.seed, max_tokens=c.max_tokens,
                                          repeat_penalty=c.repeat_penalty), lambda _t: None)
        total = (time.perf_counter() - started) * 1000
        declined = not gen.text.strip() or says_not_found(gen.text, NOT_FOUND)
        return Outcome(item=item, answer=ABSTAIN_MESSAGES[lang] if declined else gen.text.strip(),
                       decision="abstained" if declined else "answered",
                       reason="the model said it does not know" if declined else "answered without sources",
                       model_answered=not declined, grounded=False, total_ms=round(total, 1),
                       first_token_ms=None if gen.first_token_s is None else round(gen.first_token_s * 1000, 1),
                       generate_ms=None if gen.total_s is None else round(gen.total_s * 1000, 1),
                       completion_tokens=gen.completion_tokens)

    def _similarities(self, outcomes: list[Outcome]) -> None:
        """Cosine of each scored answer with its nearest gold answer, by the workspace's embedder."""
        todo = [o for o in outcomes if o.error is None and o.item.answers and not o.abstained and o.answer.strip()]
        if not todo:
            return
        texts: list[str] = []
        for o in todo:
            texts.append(o.answer)
            texts.extend(o.item.answers)
        try:
            vecs = np.asarray(self.ws.embedder.embed_passages(texts), dtype=np.float32)
        except BastionError:
            return  # no embedder: similarity stays unmeasured (null), the other metrics stand
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        at = 0
        for o in todo:
            n = len(o.item.answers)
            o.similarity = round(float(np.max(vecs[at + 1: at + 1 + n] @ vecs[at])), 4)
            at += 1 + n


def resources(result: ConfigResult) -> dict[str, Any]:
    """What a configuration cost: CPU seconds per 1,000 questions, peak memory, wall time."""
    asked = sum(1 + (o.repeat_answer is not None) for o in result.outcomes if o.error is None)  # a repeat is a question too
    per_1000 = round(result.cpu_seconds / asked * 1000, 1) if asked else None
    return {"cpu_s_per_1000": per_1000, "peak_rss_mb": result.peak_rss_mb, "seconds": round(result.seconds, 2)}


__all__ = ["ConfigResult", "Runner", "resources"]
