"""Stored tuning datasets: ``train.jsonl``, ``val.jsonl`` and a card saying what is in them.

A dataset lives in ``data/tuning/datasets/<name>/``. Its card records the audience it was built
for, where its examples came from, what the guard and the cleaning dropped, and its lineage:
every document version its text came from with that version's ACL (so a later change of a
document's ACL can withdraw what was trained on it), the prompt template, the seed and a sha256
over the two example files.

>>> ds = TuneDatasets(Workspace.open("/srv/bastion"))                             # doctest: +SKIP
>>> card = ds.build("finance-qa", source="docs", audience=["group:finance"])      # doctest: +SKIP
>>> card.examples, card.dropped_acl, card.lineage["documents"][0]["acl"]          # doctest: +SKIP
(200, 3, ['group:finance'])
"""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.core.errors import ConfigError
from bastion.tuning.clean import clean, split_by_document
from bastion.tuning.data import (
    CountTokens,
    Example,
    Progress,
    Stats,
    approx_tokens,
    from_feedback,
    from_file,
    from_question_set,
    grounded_from_corpus,
)
from bastion.tuning.guard import example_admitted, parse_audience

if TYPE_CHECKING:
    from bastion.workspace import Workspace

SPLITS = ("train", "val")


@dataclass(kw_only=True)
class DatasetCard:
    """What a stored dataset holds and where every part of it came from."""

    name: str
    created_at: str
    audience: list[str]
    origins: list[dict[str, Any]]  # {"kind": corpus|set|feedback|file, ...}
    examples: int  # kept after cleaning: train + val
    train: int
    val: int
    dropped_acl: int  # withheld by the guard: documents of a source, items, rated answers, examples
    dropped_check: int  # targets check_answer rejected
    dropped_quality: int  # dropped by cleaning (sum of clean["dropped"])
    clean: dict[str, Any]  # CleanReport.to_dict()
    by_kind: dict[str, int]
    by_lang: dict[str, int]
    lineage: dict[str, Any]  # documents [{doc_id, version_id, path, acl}], template, seed, sha256
    notes: list[str] = field(default_factory=list)

    @property
    def documents(self) -> list[dict[str, Any]]:
        return list(self.lineage.get("documents", []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetCard:
        return cls(**data)


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or name.startswith(".") or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"dataset name {name!r} may only hold letters, digits, '-', '_' and '.' (not first)")


def _jsonl(examples: Sequence[Example]) -> bytes:
    return "".join(json.dumps(e.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for e in examples).encode()


class TuneDatasets:
    """The workspace's tuning datasets."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.dir = ws.data_dir / "tuning" / "datasets"

    def path(self, name: str) -> Path:
        _check_name(name)
        return self.dir / name

    # -- building --------------------------------------------------------------------------------
    def build(self, name: str, *, source: str | None = None, sets: Sequence[str] = (), feedback: bool = False,
              files: Sequence[str | Path] = (), audience: str | Sequence[str], count: int = 200,
              val_share: float = 0.1, seed: int = 0, progress: Progress | None = None, max_tokens: int = 1024,
              replace: bool = False, acknowledge_files: bool = False, share_questions: bool = False,
              negatives: float = 0.25, passages: int = 3, languages: set[str] | None = None,
              count_tokens: CountTokens | None = None) -> DatasetCard:
        """Gather examples from the chosen origins, keep what the audience may read, clean, split, store.

        Args:
            name: the dataset's name (a folder name).
            source: a source whose documents become cloze examples (``count`` of them).
            sets: question set references (``NAME`` or ``NAME@VERSION``).
            feedback: take the users' rated answers (``share_questions``: see ``from_feedback``).
            files: JSONL files of instruction examples; they name no document, so the guard cannot
                judge them: ``acknowledge_files=True`` says the whole audience may see them.
            audience: who will use the model: ``"group:finance,user:alice"`` or a list.
            replace: overwrite a dataset of the same name.

        Raises:
            ConfigError: nothing to build from, files not acknowledged, the audience may read
                nothing, or nothing survived cleaning.
        """
        path = self.path(name)
        labels = parse_audience(audience)
        if path.exists() and not replace:
            raise ConfigError(f"a dataset named {name!r} exists; choose another name or replace it")
        if not (source or sets or feedback or files):
            raise ConfigError("nothing to build from: give a source, a question set, feedback or a file")
        if files and not acknowledge_files:
            raise ConfigError("files name no document, so their content cannot be checked against the audience; "
                              "confirm that everyone in the audience may see it (acknowledge_files / --files-ok)")
        if count < 1 or count > 100_000:
            raise ConfigError(f"count = {count}: ask for 1 to 100000 examples")
        stats = Stats()
        examples: list[Example] = []
        origins: list[dict[str, Any]] = []
        gathered: list[tuple[dict[str, Any], tuple[list[Example], Stats]]] = []
        if source:
            gathered.append(({"kind": "corpus", "source": source, "count": count, "negatives": negatives},
                             grounded_from_corpus(self.ws, source, labels, count=count, negatives=negatives,
                                                  passages=passages, seed=seed, progress=progress,
                                                  count_tokens=count_tokens)))
        for ref in sets:
            gathered.append(({"kind": "set", "set": ref},
                             from_question_set(self.ws, ref, labels, passages=passages, seed=seed,
                                               count_tokens=count_tokens)))
        if feedback:
            gathered.append(({"kind": "feedback", "share_questions": share_questions},
                             from_feedback(self.ws, labels, share_questions=share_questions, count_tokens=count_tokens)))
        for f in files:
            gathered.append(({"kind": "file", "file": Path(f).name,
                              "sha256": hashlib.sha256(Path(f).read_bytes()).hexdigest(), "acknowledged": True},
                             from_file(f, labels)))
        for origin, (got, got_stats) in gathered:
            origins.append(origin | {"built": got_stats.built, "dropped_acl": got_stats.dropped_acl})
            stats.merge(got_stats)
            examples.extend(got)
        admitted = [e for e in examples if example_admitted(e, labels)]  # again: nothing unreadable is stored
        stats.dropped_acl += len(examples) - len(admitted)
        if not admitted:
            raise ConfigError(f"no example could be built for the audience {','.join(labels)}"
                              + ("".join(f"\n  {n}" for n in stats.notes[-10:]) if stats.notes else ""))
        kept, report = clean(admitted, max_tokens=max_tokens, count_tokens=count_tokens or approx_tokens,
                             languages=languages)
        if not kept:
            raise ConfigError(f"cleaning dropped all {len(admitted)} examples: {report.dropped}")
        train, val = split_by_document(kept, val_share, seed)
        card = self._card(name, labels, origins, stats, report.to_dict(), train, val, seed)
        self._store(path, train, val, card, replace)
        return card

    def _card(self, name: str, audience: list[str], origins: list[dict[str, Any]], stats: Stats,
              report: dict[str, Any], train: list[Example], val: list[Example], seed: int) -> DatasetCard:
        from bastion.generation.prompting import load_template

        a = self.ws.config.answer
        template = load_template(a.prompt, a.prompt_dir, a.few_shot_file, base=self.ws.home)
        kept = train + val
        documents: dict[tuple[str, str], dict[str, Any]] = {}
        for e in kept:
            for d in e.documents:
                documents.setdefault((d["doc_id"], d["version_id"]), dict(d))
        digest = hashlib.sha256(_jsonl(train) + _jsonl(val)).hexdigest()
        return DatasetCard(
            name=name, created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            audience=audience, origins=origins, examples=len(kept), train=len(train), val=len(val),
            dropped_acl=stats.dropped_acl, dropped_check=stats.dropped_check, dropped_quality=report["dropped_total"],
            clean=report, by_kind=dict(sorted(Counter(e.kind for e in kept).items())),
            by_lang=dict(sorted(Counter(e.lang for e in kept).items())),
            lineage={"documents": sorted(documents.values(), key=lambda d: (d["path"], d["doc_id"])),
                     "template": {"id": template.template_id, "version": template.version, "digest": template.digest},
                     "seed": seed, "sha256": digest},
            notes=stats.notes + [f"skipped ({why}): {n}" for why, n in sorted(stats.skipped.items())])

    def _store(self, path: Path, train: list[Example], val: list[Example], card: DatasetCard, replace: bool) -> None:
        """Write into a temporary folder beside the target, then rename it into place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{path.name}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir(mode=0o700)
        try:
            (tmp / "train.jsonl").write_bytes(_jsonl(train))
            (tmp / "val.jsonl").write_bytes(_jsonl(val))
            (tmp / "card.json").write_text(json.dumps(card.to_dict(), ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
            old = None
            if path.exists():
                if not replace:
                    raise ConfigError(f"a dataset named {path.name!r} exists; choose another name or replace it")
                old = self.dir / f".{path.name}.{uuid.uuid4().hex}.old"
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str) -> DatasetCard:
        card = self.path(name) / "card.json"
        if not card.is_file():
            raise ConfigError(f"no tuning dataset {name!r}; list them with `bastion tune data list`")
        return DatasetCard.from_dict(json.loads(card.read_text(encoding="utf-8")))

    def list(self) -> builtins.list[DatasetCard]:
        if not self.dir.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.dir.iterdir())
                if not p.name.startswith(".") and (p / "card.json").is_file()]

    def examples(self, name: str, split: str = "train") -> builtins.list[Example]:
        if split not in SPLITS:
            raise ConfigError(f"split {split!r}: use {' or '.join(SPLITS)}")
        self.get(name)
        text = (self.path(name) / f"{split}.jsonl").read_text(encoding="utf-8")
        return [Example.from_dict(json.loads(line)) for line in text.splitlines() if line.strip()]

    def verify(self, name: str) -> bool:
        """True when the stored example files still hash to the card's sha256."""
        card = self.get(name)
        data = b"".join((self.path(name) / f"{s}.jsonl").read_bytes() for s in SPLITS)
        return hashlib.sha256(data).hexdigest() == card.lineage.get("sha256")

    def remove(self, name: str) -> None:
        path = self.path(name)
        if not (path / "card.json").is_file():
            raise ConfigError(f"no tuning dataset {name!r}")
        shutil.rmtree(path)


__all__ = ["SPLITS", "DatasetCard", "TuneDatasets"]
