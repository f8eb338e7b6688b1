"""Incremental, idempotent, crash-safe sync of one source.

Order of writes for every batch of changed documents (the catalog is the source of truth):

1. catalog: record the intent (document rows ``pending``, new version rows ``pending``);
2. embeddings: computed only for text not yet in the cache, and cached at once;
3. index: one ``replace_documents`` commit swaps all chunks of the batch's documents;
4. catalog: versions ``indexed``, documents ``active`` pointing at the new version.

When the index lives in the catalog's own database (the pgvector store in the catalog's PostgreSQL
database, :class:`~bastion.stores.protocol.CatalogTransactionStore`), steps 3 and 4 are one
transaction of that database, and so are the deletion of a vanished document's chunks and its
catalog update: the index and the catalog then never disagree, even for a moment. Each run records
which way it wrote (``metrics["index_commit"]``: ``"one-transaction"`` or ``"two-step"``).

Every sync first examines the whole source (scan, read, parse, chunk; chunks are spooled to
a temporary file, so memory stays flat) and measures what it would change (volume, text
quality, schema; bastion.monitoring). A ``gate`` may then refuse to publish it: the run is
recorded as ``quarantined``, the index and the documents stay as they were, and a later
``sync(..., accept=True)`` publishes deliberately. Only then are batches written as above.
Parsing and chunking (and, on Ray, embedding) may run elsewhere (:mod:`bastion.ingest.distributed`);
every write above stays in this process, in this order.

A process killed anywhere leaves either the old or the new chunks of each document in the
index, and a catalog that still differs from the source for every document not finished,
so the next sync redoes exactly those (chunk ids are deterministic, so a redo overwrites
instead of duplicating, and cached vectors make it cheap). A document that disappeared
from the source is deleted from the index even if its first sync never finished.

A sync asked to stop (:class:`~bastion.ingest.control.SyncControl`, or ``KeyboardInterrupt`` in
the Python API) stops at its next safe point: the batches committed stay, the run is recorded
as ``interrupted`` (neither failed nor an alert), and the next sync does the rest.

Each indexed version records how it was cut (``stats["chunking"]``, the chunker's
fingerprint); a document indexed under another one is re-chunked at the next sync even if
it did not change (counted as ``rechunked``).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, DocumentVersionRow, IngestRunRow, SourceRow, utcnow
from bastion.chunking import Chunker
from bastion.connectors.protocol import Connector, SourceItem
from bastion.core.errors import SyncInterrupted
from bastion.embedding.cache import CachedEmbedder
from bastion.events import log
from bastion.ingest.control import SyncControl
from bastion.ingest.distributed import Cut, Executor, InOrder, LocalExecutor, adopt_vectors
from bastion.ingest.report import SyncReport
from bastion.ingest.spool import Pending, Spool
from bastion.monitoring.quality import DeltaQuality, version_stats
from bastion.retrieval.analyzer import analyze
from bastion.stores.protocol import CatalogTransactionStore, ChunkStore, StoredChunk, in_catalog_database

Progress = Callable[[str, int, int | None], None]  # (stage, advance, total)
# given the measurements of an examined sync, the reasons not to publish it (empty: publish)
Gate = Callable[[str, dict], list[str]]


def doc_id_for(source_id: int, key: str) -> str:
    return hashlib.sha256(f"{source_id}\x00{key}".encode()).hexdigest()[:32]


def version_id_for(doc_id: str, content_hash: str) -> str:
    return hashlib.sha256(f"{doc_id}\x00{content_hash}".encode()).hexdigest()[:32]


class SyncPipeline:
    """Sync sources into the index through the catalog."""

    def __init__(self, catalog: Catalog, store: ChunkStore, embedder: CachedEmbedder, chunker: Chunker,
                 batch_chunks: int = 256, optimize_every: int = 0, executor: Executor | None = None):
        self.catalog, self.store, self.embedder, self.chunker = catalog, store, embedder, chunker
        self.executor = executor or LocalExecutor()  # where documents are cut (and, on Ray, embedded)
        self.batch_chunks, self.optimize_every = batch_chunks, optimize_every
        self.control = SyncControl()  # the running sync's (replaced by each sync)
        self._with_catalog: CatalogTransactionStore | None = None  # the store, when it writes in the catalog's transactions

    # -- entry point ---------------------------------------------------------------------
    def sync(self, source: SourceRow, connector: Connector, progress: Progress | None = None, *,
             gate: Gate | None = None, accept: bool = False, control: SyncControl | None = None) -> SyncReport:
        """Sync one source. ``gate`` may quarantine the run (nothing published) unless ``accept``;
        ``control`` may stop it at a safe point (:class:`SyncInterrupted` is raised)."""
        started = time.perf_counter()
        report = SyncReport(source=source.name)
        progress = progress or (lambda *_: None)
        self.control = control or SyncControl()
        report.run_id = self.control.run_id = self._start_run(source.name)
        embedded_before = self.embedder.embedded
        metrics: dict = {"accepted": accept}
        spool = Spool()
        try:
            self._with_catalog = self._store_in_catalog_database()
            metrics["index_commit"] = "one-transaction" if self._with_catalog is not None else "two-step"
            known, seen = self._examine_source(source, connector, report, metrics, spool, progress)  # 1.
            reasons = gate(source.name, metrics) if gate is not None and not accept else []
            if reasons:
                report.status, report.quarantined = "quarantined", reasons
                metrics["quarantine"] = reasons
                self._finish_run(report, "quarantined", started, metrics=metrics)
                return report
            self._publish(source, spool, known, seen, report, metrics, progress)  # 2.
        except (SyncInterrupted, KeyboardInterrupt):  # asked to stop: what was committed stays, no failure
            report.chunks_embedded = self.embedder.embedded - embedded_before
            report.status = "interrupted"
            self._finish_run(report, "interrupted", started, metrics=metrics)
            raise
        except BaseException as exc:
            report.chunks_embedded = self.embedder.embedded - embedded_before
            report.status = "failed"
            # what the connector saw before it failed (e.g. the columns of a table that lost one)
            metrics.setdefault("schema", dict(getattr(connector, "observed_schema", None) or {}))
            self._finish_run(report, "failed", started, reason=f"{type(exc).__name__}: {exc}", metrics=metrics)
            raise
        finally:
            spool.close()
        report.chunks_embedded = self.embedder.embedded - embedded_before
        if report.chunks_embedded:  # which engine made this run's vectors (same model id: docs/hardware.md)
            metrics["embedder_engine"] = getattr(self.embedder.embedder, "engine", None)
        self._finish_run(report, "completed", started, metrics=metrics)
        return report

    def _examine_source(self, source: SourceRow, connector: Connector, report: SyncReport, metrics: dict,
                        spool: Spool, progress: Progress) -> tuple[dict[str, DocumentRow], set[str]]:
        """Step 1: scan, read, parse and chunk every changed document into ``spool``, publishing
        nothing, and measure what publishing would change into ``metrics``. Returns the documents the
        catalog knew and the ids the source still holds."""
        delta = DeltaQuality()
        items = []
        for listed in connector.scan():
            self.control.check()
            items.append(listed)
        metrics["schema"] = dict(getattr(connector, "observed_schema", None) or {})
        progress("scan", 0, len(items))
        known = self._known(source.id)
        chunked = self._chunked_with(source.id)
        seen: set[str] = set()
        queue: InOrder[tuple[SourceItem, str, Pending | str | Callable[[], Pending | None] | None]] = InOrder()
        for item in items:
            self.control.check()
            if item.skipped:
                report.skipped.append({"file": item.key, "reason": item.skipped})
            else:
                doc_id = doc_id_for(source.id, item.key)
                seen.add(doc_id)
                stale = doc_id in chunked and chunked[doc_id] != self.chunker.fingerprint
                entry = self._examine(item, source.id, doc_id, known.get(doc_id), report, delta, stale=stale)
                queue.put((item, doc_id, entry), running=callable(entry))  # cut elsewhere: taken in turn
            for done_item, done_id, done in queue.ready(self.executor.in_flight):
                self._spool(done_item, done_id, done() if callable(done) else done, seen, report, spool, metrics)
            progress("scan", 1, None)
        for done_item, done_id, done in queue.drain():
            self.control.check()
            self._spool(done_item, done_id, done() if callable(done) else done, seen, report, spool, metrics)
        if report.skipped:
            metrics["skipped"] = report.skipped
        known_active = sum(1 for d in known.values() if d.current_version_id)
        gone = [d for d in known if d not in seen and known[d].current_version_id]
        metrics["scan"] = {"items": len(items), "bytes": sum(i.size or 0 for i in items),
                           "newest_change": max((i.mtime for i in items if i.mtime is not None), default=None)}
        metrics["delta"] = delta.to_dict() | {
            "documents_before": known_active, "to_publish": spool.documents, "removed": len(gone),
            "removed_ratio": round(len(gone) / known_active, 4) if known_active else None}
        return known, seen

    @staticmethod
    def _spool(item: SourceItem, doc_id: str, entry: Pending | str | None, seen: set[str], report: SyncReport,
               spool: Spool, metrics: dict) -> None:
        if isinstance(entry, str):  # nothing to index after all (an empty file): as if not there
            seen.discard(doc_id)
            report.skipped.append({"file": item.key, "reason": entry})
        elif entry is not None:
            spool.add(entry)
            for obj, cols in ((entry.stats or {}).get("columns") or {}).items():
                metrics["schema"][f"{item.key}#{obj}" if obj else item.key] = cols

    def _publish(self, source: SourceRow, spool: Spool, known: dict[str, DocumentRow], seen: set[str],
                 report: SyncReport, metrics: dict, progress: Progress) -> None:
        """Step 2: commit the spooled documents batch by batch, delete what the source no longer holds,
        and fold the new rows into the indexes."""
        centroid = np.zeros(self.embedder.embedder.dimension, dtype=np.float64)
        optimized_at = 0
        for batch in spool.batches(self.batch_chunks):
            self.control.check()
            centroid += self._commit_batch(source, batch, report, progress)
            self.control.committed += len(batch)
            # index small and often: queries during a long sync scan only a short unindexed tail
            if self.optimize_every and report.chunks_written - optimized_at >= self.optimize_every:
                self.store.optimize()
                optimized_at = report.chunks_written
        self.control.check()
        self._delete_missing(source, known, seen, report)
        self.control.committed += report.documents_deleted
        self.control.check()
        if report.chunks_written or report.documents_deleted:
            self.store.optimize()
        if report.chunks_written:
            metrics["centroid"] = [round(float(x), 5) for x in centroid / report.chunks_written]

    def _store_in_catalog_database(self) -> CatalogTransactionStore | None:
        """The store, when it can write in the catalog's transactions (it lives in the same database)."""
        store = in_catalog_database(self.store, self.catalog)
        log("sync.index_commit", protocol="two-step" if store is None else "one-transaction")
        return store

    def _write_index(self, doc_ids: list[str], rows: list[StoredChunk], record: Callable[[Session], None]) -> None:
        """Make ``rows`` the only chunks of ``doc_ids``, then ``record`` it in the catalog: in one transaction
        when the store lives in the catalog's database, else as two commits (index first)."""
        if self._with_catalog is None:
            self.store.replace_documents(doc_ids, rows)
            with self.catalog.session(write=True) as s:
                record(s)
            return
        with self.catalog.session(write=True) as s:
            self._with_catalog.replace_documents_in(s, doc_ids, rows)
            record(s)

    # -- runs ----------------------------------------------------------------------------
    def _start_run(self, source: str) -> int:
        with self.catalog.session(write=True) as s:
            s.execute(update(IngestRunRow).where(IngestRunRow.status == "running",
                                                 IngestRunRow.source == source).values(status="interrupted"))
            run = IngestRunRow(source=source, status="running", embedder_id=self.embedder.embedder.id, counts={}, errors=[])
            s.add(run)
            s.flush()
            return run.id

    @staticmethod
    def abandon_run(catalog: Catalog, run_id: int) -> None:
        """Record as ``interrupted`` a run whose process is about to end in the middle of it."""
        with catalog.session(write=True) as s:
            s.execute(update(IngestRunRow).where(IngestRunRow.id == run_id, IngestRunRow.status == "running")
                      .values(status="interrupted", finished_at=utcnow()))

    def _finish_run(self, report: SyncReport, status: str, started: float, reason: str | None = None,
                    metrics: dict | None = None) -> None:
        report.seconds = round(time.perf_counter() - started, 3)
        errors = report.errors + ([{"file": None, "reason": reason}] if reason else [])
        with self.catalog.session(write=True) as s:
            s.execute(update(IngestRunRow).where(IngestRunRow.id == report.run_id).values(
                status=status, finished_at=utcnow(), counts=report.counts(), errors=errors, metrics=metrics))
        log("sync.finished", status=status, **report.counts())

    # -- diff ----------------------------------------------------------------------------
    def _known(self, source_id: int) -> dict[str, DocumentRow]:
        with self.catalog.session() as s:
            rows = s.scalars(select(DocumentRow).where(DocumentRow.source_id == source_id,
                                                       DocumentRow.status != "deleted"))
            return {r.id: r for r in rows}

    def _chunked_with(self, source_id: int) -> dict[str, str | None]:
        """Document id -> the chunker fingerprint its indexed version was cut with (None: before
        fingerprints were recorded)."""
        with self.catalog.session() as s:
            rows = s.execute(select(DocumentRow.id, DocumentVersionRow.stats)
                             .join(DocumentVersionRow, DocumentVersionRow.id == DocumentRow.current_version_id)
                             .where(DocumentRow.source_id == source_id, DocumentRow.status != "deleted"))
            return {doc_id: (stats or {}).get("chunking") for doc_id, stats in rows}

    def _examine(self, item: SourceItem, source_id: int, doc_id: str, doc: DocumentRow | None, report: SyncReport,
                 delta: DeltaQuality, *, stale: bool = False) -> Pending | str | Callable[[], Pending | None] | None:
        """One document: what to publish for it, None (unchanged, failed before, or failed now), or why
        it is skipped (``"empty file"``: no bytes, or only white space).
        ``stale``: its indexed version was cut by another chunker, so it is re-chunked even if unchanged."""
        if item.error:
            self._record_failure(item, source_id, doc_id, doc, None, item.error, report, acl_problem=not item.acl)
            return None
        same_acl = doc is not None and frozenset(doc.acl) == item.acl and not stale
        if doc is not None and same_acl and self._same_stat(item, doc):
            self._known_outcome(item, doc, report)
            return None
        try:
            content = item.load()
        except OSError as exc:
            # a read failure may be passing (a network blip, a lock): tried again at the next sync
            self._record_failure(item, source_id, doc_id, doc, None, f"cannot read: {exc}", report, retry=True)
            return None
        if not content.strip():
            return "empty file"
        content_hash = hashlib.sha256(content).hexdigest()
        if doc is not None and doc.seen_hash == content_hash and (doc.status == "failed" or
                                                                  (doc.status == "active" and same_acl)):
            if doc.status == "active":
                self._touch(doc_id, item)
            self._known_outcome(item, doc, report)
            return None
        return self._parse(item, source_id, doc_id, doc, content, content_hash, report, delta, stale=stale)

    @staticmethod
    def _same_stat(item: SourceItem, doc: DocumentRow) -> bool:
        """The listing says the document is as last seen (and its last outcome stands)."""
        return (item.mtime is not None and doc.seen_mtime == item.mtime
                and (item.size is None or doc.seen_size == item.size) and doc.status in ("active", "failed"))

    @staticmethod
    def _known_outcome(item: SourceItem, doc: DocumentRow, report: SyncReport) -> None:
        """Count a document whose content is as last seen: unchanged, or failed as before."""
        if doc.status == "active":
            report.documents_unchanged += 1
        else:
            report.error(item.key, doc.error or "failed before")

    def _parse(self, item: SourceItem, source_id: int, doc_id: str, doc: DocumentRow | None, content: bytes,
               content_hash: str, report: SyncReport, delta: DeltaQuality, *,
               stale: bool = False) -> Pending | Callable[[], Pending | None] | None:
        """Parse and chunk new or changed content; a parse error is recorded for the document. With an
        executor that cuts elsewhere (Ray), returns the function that records the cut when it is done."""
        version_id = version_id_for(doc_id, content_hash)
        same_text = doc is not None and doc.seen_hash == content_hash and doc.status == "active" and not stale
        cut = self.executor.cut(content, item.media_type, doc_id, version_id, self.chunker, embed=not same_text)
        size = len(content)

        def record() -> Pending | None:
            return self._record_cut(cut(), item, source_id, doc_id, doc, version_id, content_hash, size, report, delta)
        return record if self.executor.in_flight else record()

    def _record_cut(self, cut: Cut, item: SourceItem, source_id: int, doc_id: str, doc: DocumentRow | None,
                    version_id: str, content_hash: str, size: int, report: SyncReport,
                    delta: DeltaQuality) -> Pending | None:
        if cut.retry:  # lost with its worker: recorded so that the next sync reads and cuts it again
            self._record_failure(item, source_id, doc_id, doc, None, cut.error or "lost", report, retry=True)
            return None
        if cut.parsed is None:
            delta.failed()
            self._record_failure(item, source_id, doc_id, doc, content_hash, cut.error or "", report, size=size)
            return None
        adopt_vectors(cut, self.embedder, self.chunker)  # vectors computed where it was cut, into the cache
        parsed, chunks = cut.parsed, cut.chunks
        texts = [c.text for c in chunks]
        stats = version_stats(texts, parsed.columns) | {"chunking": self.chunker.fingerprint}
        delta.parsed(texts, stats)
        if doc is None or doc.current_version_id is None:
            kind = "added"
        elif doc.seen_hash == content_hash and doc.status == "active":
            kind = "acl_changed" if frozenset(doc.acl) != item.acl else "rechunked"
        else:
            kind = "updated"
        pages = len({s.page for s in parsed.sections if s.page}) or 1
        return Pending(item, doc_id, version_id, content_hash, size, chunks,
                        item.title or parsed.title, kind, parsed.parser, pages, stats)

    def _touch(self, doc_id: str, item: SourceItem) -> None:
        with self.catalog.session(write=True) as s:
            s.execute(update(DocumentRow).where(DocumentRow.id == doc_id).values(seen_mtime=item.mtime, seen_size=item.size))

    def _record_failure(self, item: SourceItem, source_id: int, doc_id: str, doc: DocumentRow | None, content_hash: str | None,
                        reason: str, report: SyncReport, size: int | None = None, acl_problem: bool = False,
                        retry: bool = False) -> None:
        """Record a per-document error. The previous good version stays searchable, unless
        the problem is the ACL itself: then the document is withdrawn (fail closed). ``retry``: the
        listing's size and time are not remembered, so the next sync reads the document again."""
        report.error(item.key, reason)

        def record(s: Session) -> None:
            row = s.get(DocumentRow, doc_id)
            if row is None:
                row = DocumentRow(id=doc_id, source_id=source_id, key=item.key, uri=item.uri, acl=[])
                s.add(row)
            keep_old = row.current_version_id is not None and not acl_problem
            row.status = "active" if keep_old else "failed"
            if acl_problem:
                row.current_version_id = None
                row.acl = []
            row.error, row.seen_hash = reason, content_hash
            row.seen_size, row.seen_mtime = (None, None) if retry else (item.size or size, item.mtime)
            if content_hash:
                s.merge(DocumentVersionRow(id=version_id_for(doc_id, content_hash), document_id=doc_id,
                                           content_hash=content_hash, size=size or 0, mtime=item.mtime,
                                           status="failed", error=reason, run_id=report.run_id))
        if acl_problem and doc is not None and doc.current_version_id:
            self._write_index([doc_id], [], record)  # withdrawn from the index, then (or with) the catalog
        else:
            with self.catalog.session(write=True) as s:
                record(s)

    # -- write ---------------------------------------------------------------------------
    def _commit_batch(self, source: SourceRow, batch: list[Pending], report: SyncReport, progress: Progress) -> np.ndarray:
        """Publish a batch; returns the sum of its chunk vectors (for the run's centroid)."""
        with self.catalog.session(write=True) as s:  # 1. intent
            for p in batch:
                row = s.get(DocumentRow, p.doc_id)
                if row is None:
                    s.add(DocumentRow(id=p.doc_id, source_id=source.id, key=p.item.key, uri=p.item.uri,
                                      title=p.title, acl=sorted(p.item.acl), status="pending"))
                s.merge(DocumentVersionRow(id=p.version_id, document_id=p.doc_id, content_hash=p.content_hash,
                                           size=p.size, mtime=p.item.mtime, parser=p.parser, status="pending",
                                           chunk_count=len(p.chunks), run_id=report.run_id, stats=p.stats))
        texts = [c.text for p in batch for c in p.chunks]

        def embedded(n: int) -> None:
            progress("embed", n, None)
            self.control.check()  # a stop between embedding batches: this batch is redone next time

        vectors = self.embedder.embed(texts, progress=embedded)  # 2.
        rows, i = [], 0
        for p in batch:
            for c in p.chunks:
                rows.append(StoredChunk(
                    chunk_id=c.chunk_id, doc_id=p.doc_id, version_id=p.version_id, source=source.name,
                    document=p.title or p.item.key, path=p.item.key, page=c.page, section=c.section,
                    ordinal=c.ordinal, text=c.text, terms=" ".join(analyze(c.text)), char_start=c.char_start,
                    char_end=c.char_end, acl=tuple(sorted(p.item.acl)), vector=vectors[i]))
                i += 1

        def done(s: Session) -> None:  # 4.
            for p in batch:
                row = s.get(DocumentRow, p.doc_id)
                assert row is not None  # written in step 1 of this batch
                if row.current_version_id and row.current_version_id != p.version_id:
                    s.execute(update(DocumentVersionRow).where(DocumentVersionRow.id == row.current_version_id)
                              .values(status="superseded"))
                s.execute(update(DocumentVersionRow).where(DocumentVersionRow.id == p.version_id).values(status="indexed"))
                row.current_version_id, row.status, row.error = p.version_id, "active", None
                row.acl, row.uri, row.title = sorted(p.item.acl), p.item.uri, p.title
                row.seen_hash, row.seen_size, row.seen_mtime = p.content_hash, p.item.size, p.item.mtime
        self._write_index([p.doc_id for p in batch], rows, done)  # 3. one atomic commit, then 4. (or both in one)
        for p in batch:
            setattr(report, f"documents_{p.kind}", getattr(report, f"documents_{p.kind}") + 1)
            report.pages += p.pages if p.kind not in ("acl_changed", "rechunked") else 0
        report.chunks_written += len(rows)
        if not rows:
            return np.zeros(self.embedder.embedder.dimension, dtype=np.float64)
        return np.asarray(vectors, dtype=np.float64).sum(axis=0)

    def _delete_missing(self, source: SourceRow, known: dict[str, DocumentRow], seen: set[str], report: SyncReport) -> None:
        gone = [doc_id for doc_id in known if doc_id not in seen]
        if not gone:
            return

        def deleted(s: Session) -> None:
            s.execute(update(DocumentRow).where(DocumentRow.id.in_(gone)).values(status="deleted", current_version_id=None))
            s.execute(update(DocumentVersionRow).where(DocumentVersionRow.document_id.in_(gone),
                                                       DocumentVersionRow.status.in_(["indexed", "pending"]))
                      .values(status="superseded"))
        self._write_index(gone, [], deleted)
        report.documents_deleted += sum(1 for d in gone if known[d].current_version_id or known[d].status == "pending")
