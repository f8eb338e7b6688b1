"""The adapter registry: LoRA adapters of a base model, each usable only by its audience.

An adapter is trained on documents every member of its audience may read
(:mod:`bastion.tuning.guard`), so only principals its audience admits are ever answered by it;
everyone else gets the base model. An adapter is ``candidate`` after training, ``active`` once
promoted (one per audience and base model; the one it replaces becomes ``retired`` and comes back
on ``rollback``), and ``withdrawn`` when a document it was trained on has since been deleted or
restricted so that its audience may no longer read it (the monitor checks; an admin may
``accept`` it again or retrain).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import AdapterRow, DocumentRow, utc_iso, utcnow
from bastion.core.errors import ConfigError, ModelError
from bastion.core.types import Principal
from bastion.generation.llamacpp import sha256_file
from bastion.generation.protocol import LLM, ChatMessage, DecodingParams, Generation, OnToken
from bastion.tuning.guard import admits, document_admitted

STATUSES = ("candidate", "active", "retired", "withdrawn")


@dataclass(frozen=True)
class Adapter:
    name: str
    base_model: str
    path: str
    sha256: str
    size: int
    audience: list[str]
    dataset: str | None
    status: str
    status_reason: str | None = None
    documents: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    promoted_at: str | None = None
    promoted_by: str | None = None

    def admits(self, principal: Principal) -> bool:
        return admits(self.audience, principal)

    def to_dict(self, *, documents: bool = False) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not documents:
            d["documents"] = len(self.documents)
        return d


class AdaptedLLM:
    """A model with an adapter applied, saying which (``adapter``), so answers and lineage name it."""

    def __init__(self, llm: LLM, adapter: str):
        self._llm, self.adapter = llm, adapter
        self.id, self.context_window, self.sha256 = llm.id, llm.context_window, llm.sha256

    def generate(self, messages: list[ChatMessage], params: DecodingParams, on_token: OnToken | None = None) -> Generation:
        return self._llm.generate(messages, params, on_token)

    def count_tokens(self, text: str) -> int:
        return self._llm.count_tokens(text)

    def close(self) -> None:
        self._llm.close()


def _adapter(r: AdapterRow) -> Adapter:
    return Adapter(r.name, r.base_model, r.path, r.sha256, r.size, list(r.audience), r.dataset, r.status,
                   r.status_reason, list(r.documents or []), dict(r.training or {}), dict(r.evaluation or {}),
                   utc_iso(r.created_at), utc_iso(r.promoted_at), r.promoted_by)


def _same_audience(a: list[str], b: list[str]) -> bool:
    return sorted(set(a)) == sorted(set(b))


class AdapterRegistry:
    def __init__(self, catalog: Catalog, adapters_dir: Path):
        self.catalog = catalog
        self.dir = adapters_dir

    # -- registering -----------------------------------------------------------------------
    def register(self, name: str, base_model: str, gguf: Path, *, audience: list[str], dataset: str | None,
                 documents: list[dict[str, Any]], training: dict[str, Any]) -> Adapter:
        """Copy an adapter GGUF into the workspace and register it as a candidate."""
        if not name or len(name) > 200 or not all(c.isalnum() or c in "-_." for c in name):
            raise ConfigError(f"adapter name {name!r} may only hold letters, digits, '-', '_' and '.'")
        if not audience:
            raise ConfigError("an adapter needs an audience")
        with self.catalog.session() as s:
            if s.get(AdapterRow, name) is not None:
                raise ConfigError(f"an adapter named {name!r} exists; choose another name")
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / f"{name}.gguf"
        tmp = target.with_suffix(".partial")
        shutil.copyfile(gguf, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        digest = sha256_file(target)
        with self.catalog.session(write=True) as s:
            s.add(AdapterRow(name=name, base_model=base_model, path=str(target), sha256=digest,
                             size=target.stat().st_size, audience=sorted(set(audience)), dataset=dataset,
                             documents=documents, training=training, evaluation={}, status="candidate"))
        return self.get(name)

    def set_evaluation(self, name: str, evaluation: dict[str, Any]) -> Adapter:
        with self.catalog.session(write=True) as s:
            row = self._row(s, name)
            row.evaluation = evaluation
        return self.get(name)

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _row(s: Any, name: str) -> AdapterRow:
        row = s.get(AdapterRow, name)
        if row is None:
            raise ModelError(f"no adapter named {name!r}; list them with `bastion tune list`")
        return row

    def get(self, name: str) -> Adapter:
        with self.catalog.session() as s:
            return _adapter(self._row(s, name))

    def all(self) -> list[Adapter]:
        with self.catalog.session() as s:
            return [_adapter(r) for r in s.scalars(select(AdapterRow).order_by(AdapterRow.created_at))]

    def active_for(self, principal: Principal, base_model: str) -> Adapter | None:
        """The adapter that answers ``principal`` on ``base_model``: an active one whose audience admits
        them (the most recently promoted if several do), else None (the base model)."""
        with self.catalog.session() as s:
            rows = list(s.scalars(select(AdapterRow).where(AdapterRow.status == "active",
                                                           AdapterRow.base_model == base_model)))
        usable = [_adapter(r) for r in rows if admits(list(r.audience), principal)]
        usable.sort(key=lambda a: a.promoted_at or "", reverse=True)
        return usable[0] if usable else None

    # -- promotion -------------------------------------------------------------------------
    def promote(self, name: str, by: str | None) -> dict[str, Any]:
        """Make ``name`` the active adapter for its audience; the one it replaces is retired."""
        with self.catalog.session(write=True) as s:
            row = self._row(s, name)
            if row.status == "withdrawn":
                raise ConfigError(f"adapter {name!r} is withdrawn ({row.status_reason}); "
                                  "accept it first with `bastion tune accept` or train a new one")
            replaced = []
            for other in s.scalars(select(AdapterRow).where(AdapterRow.status == "active",
                                                            AdapterRow.base_model == row.base_model,
                                                            AdapterRow.name != name)):
                if _same_audience(list(other.audience), list(row.audience)):
                    other.status, other.status_reason = "retired", f"replaced by {name}"
                    replaced.append(other.name)
            row.status, row.status_reason = "active", None
            row.promoted_at, row.promoted_by = utcnow(), by
        return {"adapter": name, "replaced": replaced}

    def rollback(self, name: str | None = None, *, by: str | None = None) -> dict[str, Any]:
        """Retire the active adapter ``name`` (default: the most recently promoted one) and bring back
        the adapter it replaced, if any; with none, its audience goes back to the base model."""
        with self.catalog.session(write=True) as s:
            active = list(s.scalars(select(AdapterRow).where(AdapterRow.status == "active")
                                    .order_by(AdapterRow.promoted_at.desc())))
            if name is not None:
                active = [r for r in active if r.name == name]
            if not active:
                raise ConfigError("no active adapter to roll back" + (f" named {name!r}" if name else ""))
            row = active[0]
            row.status, row.status_reason = "retired", f"rolled back by {by or 'unknown'}"
            previous = s.scalars(select(AdapterRow).where(
                AdapterRow.status == "retired", AdapterRow.base_model == row.base_model, AdapterRow.name != row.name,
                AdapterRow.status_reason == f"replaced by {row.name}")).first()
            restored = None
            if previous is not None:
                previous.status, previous.status_reason = "active", None
                previous.promoted_at, previous.promoted_by = utcnow(), by
                restored = previous.name
        return {"retired": row.name, "restored": restored}

    def withdraw(self, name: str, reason: str) -> Adapter:
        with self.catalog.session(write=True) as s:
            row = self._row(s, name)
            row.status, row.status_reason = "withdrawn", reason
        return self.get(name)

    def accept(self, name: str, by: str | None) -> Adapter:
        """Return a withdrawn adapter to service (an admin reviewed what changed)."""
        with self.catalog.session(write=True) as s:
            row = self._row(s, name)
            if row.status != "withdrawn":
                raise ConfigError(f"adapter {name!r} is {row.status}, not withdrawn")
            row.status, row.status_reason = "active" if row.promoted_at else "candidate", f"accepted by {by or 'unknown'}"
        return self.get(name)

    # -- what changed since training -------------------------------------------------------
    def stale(self) -> list[tuple[Adapter, str]]:
        """Serving or candidate adapters whose training documents were deleted or restricted since."""
        out = []
        with self.catalog.session() as s:
            rows = list(s.scalars(select(AdapterRow).where(AdapterRow.status.in_(("active", "candidate")))))
            for row in rows:
                reasons = []
                for doc in row.documents or []:
                    current = s.get(DocumentRow, doc["doc_id"])
                    if current is None or current.status == "deleted":
                        reasons.append(f"{doc['path']} was deleted")
                    elif not document_admitted(current.acl or [], list(row.audience)):
                        reasons.append(f"{doc['path']} is now restricted ({', '.join(sorted(current.acl or [])) or 'nobody'})")
                if reasons:
                    more = f" and {len(reasons) - 3} more" if len(reasons) > 3 else ""
                    out.append((_adapter(row), "; ".join(reasons[:3]) + more))
        return out


__all__ = ["STATUSES", "AdaptedLLM", "Adapter", "AdapterRegistry"]
