"""Versioned prompt templates (Jinja2 files), language detection, the context budget.

A template pack is a folder holding ``template.toml`` (id, version), ``system.j2``,
``user.j2`` and ``rewrite.j2``. Bastion ships ``grounded-qa``; a workspace selects another
with ``answer.prompt`` and ``answer.prompt_dir``. Templates render in a sandbox with
autoescaping off (the output is a prompt, not HTML) and undefined variables are errors.
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from bastion.chunking.chunker import split_sentences
from bastion.core.errors import ConfigError
from bastion.generation.protocol import ChatMessage

BUILTIN_DIR = Path(__file__).parent / "prompts"
NOT_FOUND = "NOT_IN_SOURCES"
_FILES = ("system.j2", "user.j2", "rewrite.j2")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")

ABSTAIN_MESSAGES = {
    "en": "Not found in the sources you can access.",
    "zh": "在您有权访问的资料中未找到答案。",
}


def detect_language(text: str) -> str:
    """``zh`` when Chinese characters carry the text, else ``en``."""
    cjk = len(_CJK.findall(text))
    latin_words = len(re.findall(r"[A-Za-z]+", text))
    return "zh" if cjk and cjk >= latin_words else "en"


@dataclass(frozen=True)
class Passage:
    """One numbered source as the prompt shows it."""

    n: int
    title: str
    text: str


@dataclass(frozen=True)
class FewShot:
    question: str
    sources: tuple[str, ...]
    answer: str


class PromptTemplate:
    def __init__(self, folder: Path, few_shot_file: Path | None = None):
        meta_path = folder / "template.toml"
        if not meta_path.is_file():
            raise ConfigError(f"prompt template folder {folder} has no template.toml")
        try:
            meta = tomllib.loads(meta_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{meta_path}: not valid TOML: {exc}") from None
        for key in ("id", "version"):
            if not isinstance(meta.get(key), str) or not meta[key]:
                raise ConfigError(f"{meta_path}: needs a string {key!r}")
        self.template_id: str = meta["id"]
        self.version: str = meta["version"]
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        h = hashlib.sha256()
        self._t = {}
        for name in _FILES:
            path = folder / name
            if not path.is_file():
                raise ConfigError(f"prompt template {self.template_id!r} lacks {name} (in {folder})")
            src = path.read_text(encoding="utf-8")
            h.update(name.encode() + b"\0" + src.encode())
            try:
                self._t[name] = env.from_string(src)
            except TemplateError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        self.few_shots = _load_few_shots(few_shot_file) if few_shot_file else []
        if few_shot_file:
            h.update(Path(few_shot_file).read_bytes())
        self.digest = h.hexdigest()

    @property
    def ref(self) -> str:
        return f"{self.template_id}@{self.version}"

    def _render(self, name: str, **kw: Any) -> str:
        try:
            return self._t[name].render(**kw).strip()
        except TemplateError as exc:
            raise ConfigError(f"prompt template {self.ref} ({name}) failed to render: {exc}") from None

    def messages(self, question: str, passages: list[Passage], lang: str) -> list[ChatMessage]:
        msgs = [ChatMessage("system", self._render("system.j2", lang=lang, not_found=NOT_FOUND))]
        for shot in self.few_shots:
            shot_passages = [Passage(i + 1, "", s) for i, s in enumerate(shot.sources)]
            msgs.append(ChatMessage("user", self._render("user.j2", lang=lang, passages=shot_passages,
                                                         question=shot.question)))
            msgs.append(ChatMessage("assistant", shot.answer))
        msgs.append(ChatMessage("user", self._render("user.j2", lang=lang, passages=passages, question=question)))
        return msgs

    def rewrite_messages(self, history: list[ChatMessage], question: str, lang: str) -> list[ChatMessage]:
        return [ChatMessage("user", self._render("rewrite.j2", lang=lang, history=history, question=question))]


def load_template(name: str, prompt_dir: str | Path | None = None, few_shot_file: str | Path | None = None,
                  base: Path | None = None) -> PromptTemplate:
    """Find template ``name`` in ``prompt_dir`` (relative to the workspace ``base``), else built in."""
    candidates = []
    if prompt_dir:
        d = Path(prompt_dir)
        candidates.append((base / d if base and not d.is_absolute() else d) / name)
    candidates.append(BUILTIN_DIR / name)
    shots = None
    if few_shot_file:
        shots = Path(few_shot_file)
        shots = base / shots if base and not shots.is_absolute() else shots
    for folder in candidates:
        if folder.is_dir():
            return PromptTemplate(folder, shots)
    raise ConfigError(f"answer.prompt = {name!r}: no such template folder (looked in "
                      f"{', '.join(str(c) for c in candidates)})")


def _load_few_shots(path: Path) -> list[FewShot]:
    if not Path(path).is_file():
        raise ConfigError(f"answer.few_shot_file {path} does not exist")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [FewShot(str(d["question"]), tuple(str(s) for s in d["sources"]), str(d["answer"])) for d in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"answer.few_shot_file {path}: expected a JSON list of "
                          f"{{'question', 'sources': [...], 'answer'}} objects ({exc})") from None


def trim_passage(text: str, question_terms: set[str], budget_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """Keep the sentences that best match the question, in document order, within the budget.

    The least data that answers: a passage longer than its share is cut down to its most
    relevant sentences (and their neighbours), never sent whole.
    """
    if count_tokens(text) <= budget_tokens:
        return text
    spans = split_sentences(text)
    sents = [text[a:b].strip() for a, b in spans if text[a:b].strip()]
    if not sents:
        return text[: budget_tokens * 2]

    def overlap(s: str) -> int:
        return len(question_terms & _terms(s))

    order = sorted(range(len(sents)), key=lambda i: (-overlap(sents[i]), i))
    chosen: set[int] = set()
    used = 0
    for i in order:
        for j in (i, i + 1, i - 1):
            if j in chosen or not 0 <= j < len(sents):
                continue
            cost = count_tokens(sents[j])
            if used + cost > budget_tokens:
                continue
            chosen.add(j)
            used += cost
    if not chosen:  # even the best sentence is too long: cut it
        best = sents[order[0]]
        return best[: max(1, budget_tokens * 2)] + " …"
    out, prev = [], None
    for j in sorted(chosen):
        if prev is not None and j != prev + 1:
            out.append("…")
        out.append(sents[j])
        prev = j
    return " ".join(out)


def _terms(text: str) -> set[str]:
    from bastion.retrieval.analyzer import analyze

    return set(analyze(text))
