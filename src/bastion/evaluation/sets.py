"""Question sets: read from JSONL or CSV, stored versioned in the catalog, each with an ACL.

A set is a copy of the text it quotes, so it is readable only by who may read every document
it quotes: its ACL is the list of those documents' ACLs, and a reader must pass each one.
Importing a name that exists adds a version; runs name the version they ran.

>>> items = parse_items('{"question": "How many days of leave?", "answer": ["25", "25 days"]}\\n', "x.jsonl")
>>> items[0].answers
['25', '25 days']
>>> parse_items('{"question": ""}\\n', "x.jsonl")
Traceback (most recent call last):
...
bastion.core.errors.ConfigError: x.jsonl: 1 line(s) are invalid; nothing was imported:
  line 1: "question" is empty
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, EvalItemRow, EvalSetRow, UserRow, utc_iso
from bastion.core.errors import AccessError, ConfigError
from bastion.core.types import Principal, parse_acl
from bastion.evaluation.items import KINDS, EvalItem

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ITEMS = 100_000
MAX_QUESTION_CHARS = 4000
FIELDS = {"question", "answer", "answers", "document", "sentence", "asker", "kind"}
_MAX_ERRORS_SHOWN = 20


@dataclass(frozen=True)
class EvalSet:
    """One stored version of a question set (without its items)."""

    id: int
    name: str
    version: int
    description: str | None
    origin: str
    acl: list[list[str]]
    default_asker: str | None
    items: int
    created_by: str | None
    created_at: str | None

    def readable_by(self, principal: Principal) -> bool:
        """True when ``principal`` may read every document the set quotes."""
        return all(principal.can_read(acl) for acl in self.acl)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# -- reading files ---------------------------------------------------------------------------
def read_items_file(path: str | Path) -> list[EvalItem]:
    """Items of a ``.jsonl`` / ``.json`` (one object per line) or ``.csv`` file; every bad line is
    named in one :class:`ConfigError` and nothing is returned."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p} is not a file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{p} is {p.stat().st_size // 2**20} MiB; a question set file may be at most "
                          f"{MAX_FILE_BYTES // 2**20} MiB")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text ({exc}); save it as UTF-8") from None
    return parse_items(text, p.name)


def parse_items(text: str, name: str) -> list[EvalItem]:
    """Items from the text of a JSONL or CSV file (``name`` decides which: ``.csv`` is CSV)."""
    rows = _csv_rows(text) if name.lower().endswith(".csv") else _jsonl_rows(text)
    items: list[EvalItem] = []
    errors: list[str] = []
    for line, row in rows:
        if isinstance(row, str):
            errors.append(f"line {line}: {row}")
            continue
        try:
            items.append(item_from_row(row))
        except ConfigError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        shown = errors[:_MAX_ERRORS_SHOWN] + ([f"... and {len(errors) - _MAX_ERRORS_SHOWN} more"]
                                              if len(errors) > _MAX_ERRORS_SHOWN else [])
        raise ConfigError(f"{name}: {len(errors)} line(s) are invalid; nothing was imported:\n  " + "\n  ".join(shown))
    if not items:
        raise ConfigError(f"{name} holds no questions")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"{name} holds {len(items)} questions; a set may hold at most {MAX_ITEMS}")
    return items


def _jsonl_rows(text: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        yield n, value if isinstance(value, dict) else f"expected a JSON object, got {type(value).__name__}"


def _csv_rows(text: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "question" not in [f.strip() for f in reader.fieldnames]:
        yield 1, f"the header must name a 'question' column (it has: {', '.join(reader.fieldnames or []) or 'nothing'})"
        return
    for row in reader:
        line = reader.line_num
        if None in row:
            yield line, "more values than header columns"
            continue
        clean = {k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")}
        answer = clean.get("answer")
        if isinstance(answer, str) and answer.lstrip().startswith("["):
            try:
                clean["answer"] = json.loads(answer)
            except json.JSONDecodeError:
                pass  # a text that starts with "[": one answer
        yield line, clean


def item_from_row(row: dict[str, Any]) -> EvalItem:
    """One item from a file's row or an API body; a :class:`ConfigError` names what is wrong."""
    unknown = sorted(set(row) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(repr(u) for u in unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    question = row.get("question")
    if not isinstance(question, str):
        raise ConfigError('"question" is missing' if question is None else '"question" must be text')
    if not question.strip():
        raise ConfigError('"question" is empty')
    if len(question) > MAX_QUESTION_CHARS:
        raise ConfigError(f'"question" is {len(question)} characters; the limit is {MAX_QUESTION_CHARS}')
    if "answer" in row and "answers" in row:
        raise ConfigError('give "answer" or "answers", not both')
    answers = _answers(row.get("answer", row.get("answers")))
    kind = row.get("kind", "answerable")
    if kind not in KINDS:
        raise ConfigError(f'"kind" is {kind!r}; use one of {", ".join(KINDS)}')
    for key in ("document", "sentence", "asker"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise ConfigError(f'"{key}" must be text')
    if kind == "forbidden" and not row.get("asker"):
        raise ConfigError('a "forbidden" item needs an "asker": the user who may not read the answer')
    return EvalItem(question=question.strip(), kind=kind, answers=answers, document=row.get("document") or None,
                    sentence=row.get("sentence") or None, asker=row.get("asker") or None)


def _answers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v.strip()]
    raise ConfigError('"answer" must be a text or a list of texts')


# -- the catalog -----------------------------------------------------------------------------
def _set(row: EvalSetRow) -> EvalSet:
    return EvalSet(row.id, row.name, row.version, row.description, row.origin, [list(a) for a in row.acl or []],
                   row.default_asker, row.item_count, row.created_by, utc_iso(row.created_at))


def _stored_item(row: EvalItemRow) -> EvalItem:
    return EvalItem(question=row.question, kind=row.kind, answers=list(row.answers or []), document=row.document,
                    sentence=row.sentence, asker=row.asker, id=row.id, meta=dict(row.meta or {}))


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"set name {name!r} may only hold letters, digits, '-', '_' and '.'")


class EvalSets:
    """The workspace's question sets."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def documents_acl(self, paths: Iterable[str]) -> tuple[list[list[str]], list[str]]:
        """The distinct ACLs of the active documents at these paths, and the paths no document has."""
        wanted = {p for p in paths if p}
        acls: set[tuple[str, ...]] = set()
        found: set[str] = set()
        if wanted:
            with self.catalog.session() as s:
                for key, acl in s.execute(select(DocumentRow.key, DocumentRow.acl).where(
                        DocumentRow.key.in_(wanted), DocumentRow.status == "active")):
                    found.add(key)
                    acls.add(tuple(sorted(acl or [])))
        return [list(a) for a in sorted(acls)], sorted(wanted - found)

    def check_askers(self, items: Sequence[EvalItem], default_asker: str | None) -> None:
        """Every asker a set names must be a known user."""
        names = {i.asker for i in items if i.asker} | ({default_asker} if default_asker else set())
        with self.catalog.session() as s:
            known = set(s.scalars(select(UserRow.id).where(UserRow.id.in_(names)))) if names else set()
        missing = sorted(names - known)
        if missing:
            raise AccessError(f"unknown asker(s): {', '.join(missing)}; add them with `bastion user add` first")

    def create(self, name: str, items: Sequence[EvalItem], *, origin: str, acl: list[list[str]] | None = None,
               default_asker: str | None = None, description: str | None = None,
               created_by: str | None = None) -> EvalSet:
        """Store ``items`` as the next version of ``name``.

        The set's ACL is ``acl`` when given, else the ACLs of the documents its items name; a set
        that names no document needs an explicit ``acl`` (who may read its questions and answers).
        """
        _check_name(name)
        if not items:
            raise ConfigError("a question set needs at least one question")
        self.check_askers(items, default_asker)
        if acl is None:
            acl, _missing = self.documents_acl(i.document for i in items if i.document)
            if not acl:
                raise ConfigError("the set names no document the catalog knows, so its readers cannot be derived; "
                                  "say who may read it with --acl (e.g. --acl group:finance, or --acl everyone)")
        for labels in acl:
            for label in labels:
                parse_acl(label)
        with self.catalog.session(write=True) as s:
            version = (s.scalar(select(func.max(EvalSetRow.version)).where(EvalSetRow.name == name)) or 0) + 1
            row = EvalSetRow(name=name, version=version, description=description, origin=origin,
                             acl=[sorted(a) for a in acl], default_asker=default_asker, item_count=len(items),
                             created_by=created_by)
            s.add(row)
            s.flush()
            for pos, item in enumerate(items):
                s.add(EvalItemRow(set_id=row.id, position=pos, question=item.question, kind=item.kind,
                                  answers=list(item.answers), document=item.document, sentence=item.sentence,
                                  asker=item.asker, meta=dict(item.meta)))
            return _set(row)

    def get(self, ref: str) -> EvalSet:
        """``NAME`` (its latest version) or ``NAME@VERSION``."""
        name, _, version = ref.partition("@")
        with self.catalog.session() as s:
            q = select(EvalSetRow).where(EvalSetRow.name == name)
            if version:
                if not version.isdigit():
                    raise ConfigError(f"set version {version!r} must be a number (e.g. {name}@2)")
                q = q.where(EvalSetRow.version == int(version))
            row = s.scalars(q.order_by(EvalSetRow.version.desc()).limit(1)).first()
            if row is None:
                raise ConfigError(f"no question set {ref!r}; list them with `bastion eval set list`")
            return _set(row)

    def by_id(self, set_id: int) -> EvalSet:
        with self.catalog.session() as s:
            row = s.get(EvalSetRow, set_id)
            if row is None:
                raise ConfigError(f"no question set with id {set_id}")
            return _set(row)

    def listing(self, *, all_versions: bool = False) -> list[EvalSet]:
        with self.catalog.session() as s:
            rows = list(s.scalars(select(EvalSetRow).order_by(EvalSetRow.name, EvalSetRow.version.desc())))
        out = [_set(r) for r in rows]
        if all_versions:
            return out
        latest: dict[str, EvalSet] = {}
        for e in out:
            latest.setdefault(e.name, e)
        return list(latest.values())

    def items(self, eval_set: EvalSet) -> list[EvalItem]:
        with self.catalog.session() as s:
            rows = s.scalars(select(EvalItemRow).where(EvalItemRow.set_id == eval_set.id).order_by(EvalItemRow.position))
            return [_stored_item(r) for r in rows]

    def add_items(self, ref: str, items: Sequence[EvalItem], *, created_by: str | None = None,
                  acl: list[list[str]] | None = None) -> EvalSet:
        """A new version of ``ref`` holding its items and ``items`` (the ACL gains theirs)."""
        base = self.get(ref)
        merged = [EvalItem(**{**i.to_dict(), "id": None}) for i in self.items(base)] + list(items)
        new_acl = {tuple(a) for a in base.acl} | {tuple(sorted(a)) for a in (acl or [])}
        return self.create(base.name, merged, origin=base.origin, acl=[list(a) for a in sorted(new_acl)],
                           default_asker=base.default_asker, description=base.description, created_by=created_by)

    def delete(self, name: str) -> int:
        """Remove every version of a set (runs keep their results); returns how many versions."""
        with self.catalog.session(write=True) as s:
            rows = list(s.scalars(select(EvalSetRow).where(EvalSetRow.name == name)))
            if not rows:
                raise ConfigError(f"no question set {name!r}")
            for r in rows:
                s.delete(r)
            return len(rows)


__all__ = ["EvalSet", "EvalSets", "item_from_row", "parse_items", "read_items_file"]
