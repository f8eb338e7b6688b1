"""``Workspace.evaluation``: question sets, configurations, runs, comparisons, promotion and the
pinned regression sets, on one workspace.

>>> ws = Workspace.open("/srv/bastion")                                        # doctest: +SKIP
>>> ws.evaluation.import_set("hr-faq", "hr-faq.jsonl", asker="alice")          # doctest: +SKIP
>>> run = ws.evaluation.run("hr-faq", ["current", "dense-k8"])                 # doctest: +SKIP
>>> run["configs"][0]["metrics"]["f1"], run["comparison"]["metrics"]["f1"]     # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.catalog.models import DocumentRow, EvalCandidateRow, FeedbackRow, LineageRow, SourceRow
from bastion.core.errors import ConfigError
from bastion.core.types import parse_acl
from bastion.evaluation.configs import CURRENT, EvalConfig, EvalConfigs
from bastion.evaluation.items import EvalItem
from bastion.evaluation.metrics import aggregate, compare_outcomes
from bastion.evaluation.runner import Progress, Runner, resources
from bastion.evaluation.runs import EvalRuns
from bastion.evaluation.sets import EvalSet, EvalSets, read_items_file

if TYPE_CHECKING:
    from bastion.evaluation.judge import Judge
    from bastion.evaluation.regression import Regression
    from bastion.workspace import Workspace

DEFAULT_REPEAT = 10  # items asked twice per configuration, for consistency


@dataclass
class Imported:
    eval_set: EvalSet
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"set": self.eval_set.to_dict(), "notes": self.notes}


class Evaluation:
    """The evaluation face of one workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.sets = EvalSets(ws.catalog)
        self.configs = EvalConfigs(ws.catalog)
        self.runs = EvalRuns(ws.catalog)

    @property
    def regression(self) -> Regression:
        from bastion.evaluation.regression import Regression

        return Regression(self)

    # -- question sets -----------------------------------------------------------------------
    def import_set(self, name: str, path: str | Path, *, acl: str | None = None, asker: str | None = None,
                   description: str | None = None, created_by: str | None = None) -> Imported:
        """Read a JSONL or CSV file into the next version of set ``name`` (all of it or nothing)."""
        return self.import_items(name, read_items_file(path), acl=acl, asker=asker, description=description,
                                 created_by=created_by)

    def import_items(self, name: str, items: Sequence[EvalItem], *, acl: str | None = None, asker: str | None = None,
                     description: str | None = None, created_by: str | None = None) -> Imported:
        """Store checked items as the next version of set ``name``; its readers are ``acl`` (an ACL
        text) or, by default, who may read every document the items name."""
        self._check_forbidden(items, asker)
        notes: list[str] = []
        docs_acl, missing = self.sets.documents_acl(i.document for i in items if i.document)
        if missing:
            notes.append(f"{len(missing)} document(s) the items name are not in the catalog (yet): "
                         + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        set_acl = [sorted(parse_acl(acl))] if acl else None
        if set_acl is None and missing and docs_acl:
            notes.append("the set's readers were derived from the documents the catalog knows only")
        created = self.sets.create(name, items, origin="import", acl=set_acl, default_asker=asker,
                                   description=description, created_by=created_by)
        return Imported(created, notes)

    def _check_forbidden(self, items: Sequence[EvalItem], default_asker: str | None) -> None:
        """A forbidden item's asker must not be able to read its document (else it is not forbidden)."""
        bad: list[str] = []
        with self.ws.catalog.session() as s:
            for n, item in enumerate(items, 1):
                if item.kind != "forbidden" or not item.document:
                    continue
                asker = item.asker or default_asker
                if not asker:
                    continue
                principal = self.ws.principal(asker)
                readable = [d for d in s.scalars(select(DocumentRow).where(DocumentRow.key == item.document,
                                                                           DocumentRow.status == "active"))
                            if principal.can_read(d.acl or [])]
                if readable:
                    bad.append(f"item {n}: {asker} may read {item.document}, so the item is not forbidden")
        if bad:
            raise ConfigError("some forbidden items are readable by their asker; nothing was imported:\n  "
                              + "\n  ".join(bad[:20]))

    def generate_set(self, name: str, source: str, count: int, *, asker: str | None = None, unanswerable: int = 0,
                     forbidden: int = 0, seed: int = 0, use_llm: bool = True, created_by: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Imported:
        """Questions generated from a source's indexed text, each with its gold document and sentence."""
        from bastion.evaluation.generate import SourcePassage, generate_items, pick_forbidden

        self.ws.sources.get(source)
        if count < 1 or count > 10_000:
            raise ConfigError(f"--count {count}: ask for 1 to 10000 questions")
        principal = self.ws.principal(asker) if asker else None
        with self.ws.catalog.session() as s:
            source_id = s.scalar(select(SourceRow.id).where(SourceRow.name == source))
            docs = {d.id: d for d in s.scalars(select(DocumentRow).where(DocumentRow.source_id == source_id,
                                                                         DocumentRow.status == "active"))}
        if not docs:
            raise ConfigError(f"source {source!r} has no indexed documents; run `bastion sync {source}` first")
        passages = [SourcePassage(doc_id=r["doc_id"], path=r["path"], text=r["text"], acl=frozenset(docs[r["doc_id"]].acl or []))
                    for r in self.ws.store.rows_for(sorted(docs)) if r["doc_id"] in docs]
        mine = [p for p in passages if principal is None or principal.can_read(p.acl)]
        if not mine:
            raise ConfigError(f"{asker} may read no document of {source!r}; choose another --as user")
        pairs = []
        notes: list[str] = []
        if forbidden:
            users = {u: self.ws.principal(u) for u in self._user_ids()}
            pairs = pick_forbidden(passages, users, forbidden, seed)
            if len(pairs) < forbidden:
                notes.append(f"{len(pairs)} of {forbidden} forbidden questions: only so many (user, document) pairs "
                             "exist where the user may not read the document")
        llm = None
        if use_llm and self.ws.config.answer.mode == "answer":
            try:
                llm = self.ws.llm
            except ConfigError:
                llm = None
            except Exception as exc:  # noqa: BLE001 - no model: generate deterministically and say so
                notes.append(f"no LLM available ({exc}); questions are cloze questions")
        result = generate_items(mine, count=count, asker=asker, seed=seed, llm=llm, unanswerable=unanswerable,
                                forbidden=pairs, progress=progress)
        notes.extend(result.notes)
        acl = result.acl or ([[f"user:{asker}"]] if asker else None)
        created = self.sets.create(name, result.items, origin="generate", acl=acl, default_asker=asker,
                                   description=f"generated from {source}", created_by=created_by)
        return Imported(created, notes)

    def _user_ids(self) -> list[str]:
        from bastion.catalog.models import UserRow

        with self.ws.catalog.session() as s:
            return list(s.scalars(select(UserRow.id).order_by(UserRow.id)))

    # -- feedback as candidates ----------------------------------------------------------------
    def candidates(self, limit: int = 100) -> list[dict[str, Any]]:
        """Rated answers no admin has accepted or rejected yet, newest first."""
        with self.ws.catalog.session() as s:
            decided = set(s.scalars(select(EvalCandidateRow.feedback_id)))
            out = []
            for fb in s.scalars(select(FeedbackRow).order_by(FeedbackRow.id.desc())):
                if fb.id in decided:
                    continue
                lin = s.get(LineageRow, fb.lineage_id)
                if lin is None:
                    continue
                cites = (lin.record or {}).get("citations") or []
                out.append({"feedback_id": fb.id, "rating": "up" if fb.rating > 0 else "down", "user": fb.user_id,
                            "question": lin.question, "answer": (lin.record or {}).get("answer"),
                            "correction": fb.correction, "comment": fb.comment,
                            "documents": sorted({c.get("path") for c in cites if c.get("path")}),
                            "decision": lin.decision})
                if len(out) >= limit:
                    break
            return out

    def accept(self, feedback_ids: Sequence[int], set_name: str, *, by: str | None = None) -> EvalSet:
        """Add these rated answers to set ``set_name`` (a new version, or a new set) as items."""
        wanted = {c["feedback_id"]: c for c in self.candidates(limit=100_000)}
        unknown = [i for i in feedback_ids if i not in wanted]
        if unknown:
            raise ConfigError(f"no undecided feedback with id(s) {', '.join(map(str, unknown))}; "
                              "list them with `bastion eval candidates`")
        items, docs = [], set()
        for fid in feedback_ids:
            c = wanted[fid]
            answers = [c["correction"]] if c["correction"] else ([c["answer"]] if c["rating"] == "up" and c["answer"] else [])
            document = c["documents"][0] if c["documents"] and c["rating"] == "up" else None
            docs.update(c["documents"])
            items.append(EvalItem(question=c["question"], answers=answers, document=document, asker=c["user"],
                                  meta={"origin": "feedback", "feedback_id": fid, "rating": c["rating"]}))
        acl, _missing = self.sets.documents_acl(docs)
        acl += [[f"user:{u}"] for u in sorted({i.asker for i in items if i.asker})]  # each asker's own question
        try:
            self.sets.get(set_name)
            created = self.sets.add_items(set_name, items, created_by=by, acl=acl)
        except ConfigError:
            created = self.sets.create(set_name, items, origin="feedback", acl=acl, created_by=by)
        self._decide(feedback_ids, "accepted", set_name, by)
        return created

    def reject(self, feedback_ids: Sequence[int], *, by: str | None = None) -> None:
        self._decide(feedback_ids, "rejected", None, by)

    def _decide(self, feedback_ids: Sequence[int], status: str, set_name: str | None, by: str | None) -> None:
        with self.ws.catalog.session(write=True) as s:
            for fid in feedback_ids:
                s.merge(EvalCandidateRow(feedback_id=fid, status=status, set_name=set_name, decided_by=by))

    # -- runs ------------------------------------------------------------------------------
    def resolve_configs(self, names: Sequence[str | tuple[str, EvalConfig]],
                        mode: str | None = None) -> list[tuple[str, EvalConfig]]:
        """(name, resolved configuration) for each stored name or (name, configuration) pair;
        ``mode`` overrides every approach."""
        if mode is not None and mode not in ("extract", "answer", "prompt-only"):
            raise ConfigError(f"--mode {mode!r}: use extract, answer or prompt-only")
        out = []
        for entry in names or [CURRENT]:
            name, spec = entry if isinstance(entry, tuple) else (entry, self.configs.get(entry))
            if mode:
                spec = spec.model_copy(update={"approach": mode})
            if name == CURRENT and mode and mode != self.ws.config.answer.mode:
                name = f"{CURRENT}-{mode}"  # not the workspace's settings any more: say so in the name
            out.append((name, spec.resolve(self.ws.config)))
        if len({n for n, _ in out}) != len(out):
            raise ConfigError("a configuration is named twice in one run")
        return out

    def run(self, set_ref: str, configs: Sequence[str | tuple[str, EvalConfig]] = (), *, mode: str | None = None,
            asker: str | None = None,
            trigger: str = "cli", started_by: str | None = None, repeat: int = DEFAULT_REPEAT,
            judge: Judge | None = None, limit: int | None = None, progress: Progress | None = None,
            on_start: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Ask every item of a set under each configuration; returns the stored run (with items).

        Everything that can be checked up front (set, configurations, asker) is checked before the
        run is recorded; ``on_start`` then receives the run's id (the HTTP API answers with it).
        """
        eval_set = self.sets.get(set_ref)
        resolved = self.resolve_configs(configs, mode)
        items = self.sets.items(eval_set)[: limit or None]
        default_asker = asker or eval_set.default_asker
        if default_asker:
            self.ws.principal(default_asker)  # an unknown user fails now, not once per item
        run_id = self.runs.start(eval_set.id, trigger=trigger, started_by=started_by)
        if on_start is not None:
            on_start(run_id)
        results = []
        try:
            for name, spec in resolved:
                result = Runner(self.ws, name, spec, default_asker=default_asker, repeat=repeat, judge=judge).run(items, progress)
                metrics = aggregate(result.outcomes) | resources(result)
                self.runs.add_config(run_id, name, spec.to_dict(), result.fingerprint, metrics, result.outcomes)
                results.append(result)
        except BaseException as exc:
            self.runs.finish(run_id, error=f"{type(exc).__name__}: {exc}")
            raise
        comparison = None
        if len(results) >= 2:
            comparison = {"baseline": results[0].name, "against": results[1].name,
                          "metrics": compare_outcomes(results[0].outcomes, results[1].outcomes)}
        self.runs.finish(run_id, comparison=comparison)
        return self.runs.get(run_id)

    def compare(self, run_a: str, run_b: str, *, config_a: str | None = None, config_b: str | None = None) -> dict[str, Any]:
        """Two runs' configurations on their shared items: each metric's difference with its CI and p-value."""
        a, b = self.runs.get(run_a, items=False), self.runs.get(run_b, items=False)
        ca = config_a or a["configs"][0]["name"]
        cb = config_b or b["configs"][0]["name"]
        for run, name in ((a, ca), (b, cb)):
            if name not in {c["name"] for c in run["configs"]}:
                raise ConfigError(f"run {run['run_id']} has no configuration {name!r}")
        paired = compare_outcomes(self.runs.outcomes(run_a, ca), self.runs.outcomes(run_b, cb))
        metrics_a = next(c["metrics"] for c in a["configs"] if c["name"] == ca)
        metrics_b = next(c["metrics"] for c in b["configs"] if c["name"] == cb)
        return {"a": {"run_id": run_a, "config": ca, "set": a["set"], "metrics": metrics_a},
                "b": {"run_id": run_b, "config": cb, "set": b["set"], "metrics": metrics_b},
                "same_set": a["set"]["id"] == b["set"]["id"], "metrics": paired}

    def report(self, run_ids: Sequence[str]) -> str:
        from bastion.evaluation.report import build_report

        return build_report([self.runs.get(r) for r in run_ids])


__all__ = ["DEFAULT_REPEAT", "Evaluation", "Imported"]
