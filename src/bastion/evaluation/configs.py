"""Evaluation configurations: which model, approach, retrieval settings and prompt to answer with.

A configuration is a named, stored object; a setting left out takes the workspace's value, and
the workspace's own settings are the configuration ``current``.

>>> from bastion.core.config import WorkspaceConfig
>>> spec = EvalConfig(approach="extract", k=8).resolve(WorkspaceConfig())
>>> spec.approach, spec.k, spec.model, spec.search_mode
('extract', 8, 'smollm2-135m', 'hybrid')
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import EvalConfigRow
from bastion.core.config import WorkspaceConfig
from bastion.core.errors import ConfigError

CURRENT = "current"
Approach = Literal["extract", "answer", "prompt-only"]


class EvalConfig(BaseModel):
    """What one configuration changes; ``None`` keeps the workspace's setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # a name from `bastion model list`
    approach: Approach | None = None  # extract: quotes only; answer: retrieval + LLM; prompt-only: LLM, no sources
    search_mode: Literal["hybrid", "dense", "bm25"] | None = None
    k: int | None = Field(default=None, ge=1, le=50)  # passages retrieved (answer.max_passages)
    max_passages: int | None = Field(default=None, ge=1, le=20)  # of those, shown to the LLM (answer.prompt_passages)
    prompt: str | None = None  # a prompt template folder (answer.prompt)
    min_evidence: float | None = Field(default=None, ge=-1, le=2)  # evidence threshold for abstention
    # None: as served (an asker gets the active adapter their audience admits); "none": the base model
    # for everyone; a name: that adapter (candidate or not) for the askers its audience admits
    adapter: str | None = None

    def resolve(self, ws: WorkspaceConfig) -> EvalConfig:
        """Every setting filled: this configuration's, else the workspace's."""
        a = ws.answer
        return EvalConfig(model=self.model or ws.llm.model, approach=self.approach or a.mode,
                          search_mode=self.search_mode or ws.search.mode, k=self.k or a.max_passages,
                          max_passages=self.max_passages or a.prompt_passages, prompt=self.prompt or a.prompt,
                          min_evidence=a.min_evidence if self.min_evidence is None else self.min_evidence,
                          adapter=self.adapter)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def parse_spec(data: dict[str, Any]) -> EvalConfig:
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid evaluation configuration: {problems}") from None


class EvalConfigs:
    """The stored configurations (``current`` is never stored: it is the workspace's settings)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def put(self, name: str, spec: EvalConfig, *, created_by: str | None = None) -> EvalConfig:
        if name == CURRENT:
            raise ConfigError(f"{CURRENT!r} is the workspace's own settings; give the configuration another name")
        if not name or len(name) > 200 or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"configuration name {name!r} may only hold letters, digits, '-', '_' and '.'")
        with self.catalog.session(write=True) as s:
            row = s.get(EvalConfigRow, name)
            if row is None:
                s.add(EvalConfigRow(name=name, spec=spec.to_dict(), created_by=created_by))
            else:
                row.spec = spec.to_dict()
        return spec

    def get(self, name: str) -> EvalConfig:
        if name == CURRENT:
            return EvalConfig()
        with self.catalog.session() as s:
            row = s.get(EvalConfigRow, name)
            if row is None:
                raise ConfigError(f"no evaluation configuration {name!r}; add one with `bastion eval config add {name} ...` "
                                  f"or use {CURRENT!r} (the workspace's settings)")
            return parse_spec(row.spec)

    def all(self) -> dict[str, EvalConfig]:
        with self.catalog.session() as s:
            rows = list(s.scalars(select(EvalConfigRow).order_by(EvalConfigRow.name)))
        return {CURRENT: EvalConfig()} | {r.name: parse_spec(r.spec) for r in rows}

    def remove(self, name: str) -> None:
        with self.catalog.session(write=True) as s:
            row = s.get(EvalConfigRow, name)
            if row is None:
                raise ConfigError(f"no evaluation configuration {name!r}")
            s.delete(row)


__all__ = ["CURRENT", "EvalConfig", "EvalConfigs", "parse_spec"]
