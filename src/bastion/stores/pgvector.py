"""Chunk index on PostgreSQL with pgvector (``[store] backend = "pgvector"``, docs/pgvector.md).

Tables and indexes: :mod:`.pgvector_schema`. Every read applies the ACL predicate in its WHERE
clause (``acl && labels``, GIN-indexed), ``fetch`` included. Dense search walks the HNSW index with
pgvector's iterative scan (``hnsw.iterative_scan = relaxed_order``), which keeps walking the graph
until the filter admitted k rows; a principal who may read few chunks (at most ``exact_threshold``, or
at most ``dense_exact_share`` of the table and ``dense_exact_rows`` chunks) is ranked exactly from those
rows instead, and a walk that still found fewer than k falls back to the exact ranking, so a filtered
top-k returns k hits whenever k readable chunks exist. BM25 is computed
in SQL over the stored analysed terms: with statistics of the principal's readable chunks only for a
principal who may read at most ``exact_threshold`` chunks, else with whole-table statistics (kept in
``bastion_term_stats`` by ``replace_documents``) and MaxScore pruning, returning rank-derived scores.
``replace_documents`` deletes and inserts in one transaction: readers see the old version or the new.
A store in the catalog's own database (:meth:`PgVectorStore.shares_database_with`) runs the same writes
in the catalog's transaction instead (:meth:`PgVectorStore.replace_documents_in`), so that a sync commits
a batch's chunks and its catalog rows together.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.core.errors import ConfigError, EmbedderMismatch, StoreError
from bastion.events import log
from bastion.stores.lance_schema import rank_score
from bastion.stores.pgvector_schema import (
    CHUNKS,
    K1,
    LABELS,
    LOCK_SPACE,
    META,
    ROW_COLUMNS,
    STATS,
    TERMS,
    VECTOR_STORAGE,
    acl_where,
    bm25_sql,
    bm25_table_sql,
    ddl,
    engine,
    hnsw_ddl,
    label_vectors_ddl,
    label_vectors_fit,
    label_where,
    resolve_url,
    stats_backfill_sql,
    stats_update_sql,
)
from bastion.stores.protocol import Ranked, SourceFilter, StoredChunk, StoreHit

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.catalog.db import Catalog
    from bastion.core.config import WorkspaceConfig

__all__ = ["PgVectorStore", "drop_tables", "open_store", "store_url"]

_ROWS = ", ".join(f"c.{c}" for c in ROW_COLUMNS)
_INTS = {"page", "ordinal", "char_start", "char_end"}
CHUNK_TYPES = ["int4" if c in _INTS else "text" for c in ROW_COLUMNS] + ["text[]", "vector"]
TERM_TYPES = ["text", "text", "text", "text[]", "int4", "text[]", "int4[]"]


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


class PgVectorStore:
    """PostgreSQL + pgvector :class:`~bastion.stores.protocol.ChunkStore`.

    Args:
        url: a SQLAlchemy URL (``postgresql+psycopg://user@host/db``, password set), see
            :func:`bastion.stores.pgvector_schema.resolve_url`.
        embedder_id: the embedder the vectors come from; the database refuses another (:class:`EmbedderMismatch`).
        dimension: the vectors' dimension.
        ef_search: HNSW candidate list size per search (raised to k when k is larger).
        exact_threshold: a principal who may read at most this many chunks is ranked exactly.
        dense_exact_share, dense_exact_rows: a principal who may read at most this share of the table, and at most
            ``dense_exact_rows`` chunks, is also ranked exactly by vector (the filtered HNSW walk is slow and misses
            neighbours when the filter admits few of the rows it meets); 0: only ``exact_threshold`` decides.
        ann_min_rows: rows from which :meth:`optimize` builds the HNSW index.
        hnsw_m, ef_construction: the HNSW index's build parameters.
        max_scan_tuples: how far an iterative scan may walk before giving up (then: exact ranking).
        build_memory_mb: ``maintenance_work_mem`` for the HNSW build (an index larger than it builds far slower).
        label_vectors: keep a half-precision copy of every vector per ACL label of its chunk (:data:`LABELS`), from
            which the exact ranking reads a principal's chunks side by side instead of a page each (10,000 chunks
            of 1M: 6 ms instead of 22 at the median), the candidates re-ranked with the full vectors; costs about 1.9 kB of disk per
            chunk and label (384 dimensions). Filled on the first open with it set; up to 1,200 dimensions.

    >>> store = PgVectorStore("postgresql+psycopg://bastion@db/bastion", embedder_id="hash-64", dimension=64)  # doctest: +SKIP
    >>> store.count()   # doctest: +SKIP
    0
    """

    terms_budget = 5_000  # BM25 above exact_threshold: summed document frequency of the terms scored exactly
    terms_fill_cap = 200  # ... and how many chunks holding only commoner terms are sampled past that
    acl_bitmap_ratio = 8  # ... whose candidates are read before the ACL once it admits this many times more chunks
    fill_lock_timeout_s = 5.0  # how long filling the label copies waits for writers and index builds (then: later)
    path_ttl_s = 30.0  # how long a filter's readable count and the table's size are remembered (:meth:`_readable`)

    def __init__(self, url: Any, *, embedder_id: str, dimension: int, ef_search: int = 100,
                 exact_threshold: int = 1000, ann_min_rows: int = 10_000, hnsw_m: int = 16,
                 ef_construction: int = 128, max_scan_tuples: int = 20_000, pool_size: int = 5,
                 connect_timeout_s: int = 10, build_memory_mb: int = 512, dense_exact_share: float = 0.15,
                 dense_exact_rows: int = 20_000, label_vectors: bool = False) -> None:
        self.embedder_id, self.dimension = embedder_id, dimension
        self.ef_search, self.exact_threshold, self.ann_min_rows = ef_search, exact_threshold, ann_min_rows
        self.hnsw_m, self.ef_construction, self.max_scan_tuples = hnsw_m, ef_construction, max_scan_tuples
        self.url, self.build_memory_mb = url, build_memory_mb
        self.dense_exact_share, self.dense_exact_rows = dense_exact_share, dense_exact_rows
        self.label_vectors = label_vectors and label_vectors_fit(dimension)
        if label_vectors and not self.label_vectors:
            log("store.label_vectors_too_wide", dimension=dimension)
        self._create_extension()
        self._engine = engine(url, pool_size=pool_size, connect_timeout_s=connect_timeout_s)
        self._ann_built: bool | None = None
        self._ann_lock = threading.Lock()
        self._paths: dict[tuple[frozenset[str], Any], tuple[int, float]] = {}  # filter -> (readable, capped; when)
        self._rows: tuple[int, float] = (-1, 0.0)  # the table's estimated rows, when read
        self._setup()

    # -- connections ------------------------------------------------------------------------
    def _where(self) -> str:
        from bastion.catalog.db import where

        return where(self.url)

    def _create_extension(self) -> None:
        """``CREATE EXTENSION vector`` when missing (the pool's connections need its type to exist)."""
        import psycopg

        from bastion.core.errors import MissingExtraError

        try:
            from pgvector.psycopg import register_vector  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("the pgvector store needs the pgvector extra: pip install 'bastion[pgvector]'") from exc
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                found = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
                if found is None:
                    available = conn.execute("SELECT default_version FROM pg_available_extensions "
                                             "WHERE name = 'vector'").fetchone()
                    if available is None:
                        raise StoreError(f"the {self._where()} has no pgvector extension: install pgvector >= 0.8 "
                                         "on the server (managed services: enable the 'vector' extension), or "
                                         "use [store] backend = \"lance\"")
                    try:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    except psycopg.Error as exc:
                        raise StoreError(f"cannot create the pgvector extension in the {self._where()}: "
                                         f"{_reason(exc)}; have the database owner run CREATE EXTENSION vector") from None
                    found = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        except psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to the chunk store, the {self._where()} "
                             f"(user {self.url.username!r}): {_reason(exc)}") from None
        installed = str(found[0]) if found else "?"
        version = tuple(int(p) for p in installed.split(".")[:2] if p.isdigit())
        if version < (0, 8):
            raise StoreError(f"the {self._where()} has pgvector {installed}; the store needs >= 0.8 (iterative "
                             "index scans keep a filtered search from returning fewer than k hits): "
                             "ALTER EXTENSION vector UPDATE")

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor in one transaction on a pooled connection: committed on success, rolled back on error."""
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            raw.close()

    @contextmanager
    def _autocommit(self) -> Iterator[Any]:
        """A pooled connection in autocommit mode, for statements that run outside a transaction (VACUUM,
        CREATE INDEX CONCURRENTLY); given back to the pool in transaction mode."""
        raw = self._engine.raw_connection()
        conn = raw.driver_connection
        try:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False
        finally:
            raw.close()

    def _setup(self) -> None:
        """Create the tables (once, under an advisory lock) and check the embedder recorded in them."""
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
            # Only a store that lacks a table runs the DDL: its CREATE INDEX IF NOT EXISTS takes a lock on the
            # chunks table that deadlocks with a CREATE INDEX CONCURRENTLY another process may be running.
            cur.execute("SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
                        ([META, CHUNKS, TERMS, STATS],))
            if not cur.fetchone()[0]:
                for statement in ddl(self.dimension):
                    cur.execute(statement)
            cur.execute(f"SELECT 1 FROM {STATS} WHERE term = ''")
            if cur.fetchone() is None:  # new, or created before the statistics table existed
                cur.execute(stats_backfill_sql())
            cur.execute(f"SELECT key, value FROM {META}")
            meta = dict(cur.fetchall())
            cur.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
                        (CHUNKS,))
            storage = cur.fetchone()
            if not meta:
                cur.executemany(f"INSERT INTO {META} (key, value) VALUES (%s, %s)",
                                [("embedder_id", self.embedder_id), ("dimension", str(self.dimension))])
        if meta:
            if storage is not None and storage[0] != "m":
                self._keep_vectors_inline()
            if meta.get("embedder_id") != self.embedder_id or meta.get("dimension") != str(self.dimension):
                raise EmbedderMismatch(
                    f"the chunk store in the {self._where()} was built with embedder {meta.get('embedder_id')!r} "
                    f"({meta.get('dimension')} dimensions); the workspace now uses {self.embedder_id!r} "
                    f"({self.dimension} dimensions). Restore the old embedder setting, or run "
                    "`bastion rebuild` to re-embed everything with the new one.")
        if self.label_vectors and meta.get("label_vectors") != "complete":
            self._fill_label_vectors()

    def _fill_label_vectors(self) -> None:
        """Create and fill the per-label copies (``label_vectors`` set, the table missing or unfinished).

        One transaction holding the chunks table in SHARE mode: writers already writing finish first and later ones
        wait, then see the table and keep it in step (:meth:`_replace`), so no chunk is missed or copied stale. It waits
        at most ``fill_lock_timeout_s`` for that lock (a writer, an index build); past it this process ranks from the
        chunks table and the next open tries again.
        """
        import psycopg

        t0 = time.monotonic()
        try:
            with self._tx() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
                cur.execute(f"SELECT value FROM {META} WHERE key = 'label_vectors'")
                done = cur.fetchone()
                if done and done[0] == "complete":  # another process filled it meanwhile
                    return
                cur.execute(f"SET LOCAL lock_timeout = '{int(self.fill_lock_timeout_s * 1000)}ms'")
                cur.execute(f"LOCK TABLE {CHUNKS} IN SHARE MODE")
                for statement in label_vectors_ddl(self.dimension):
                    cur.execute(statement)
                cur.execute(f"INSERT INTO {META} (key, value) VALUES ('label_vectors', 'complete') "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
        except psycopg.errors.LockNotAvailable:
            self.label_vectors = False
            log("store.label_vectors_deferred", waited_s=self.fill_lock_timeout_s)
            return
        log("store.label_vectors_filled", seconds=round(time.monotonic() - t0, 1))

    def _keep_vectors_inline(self) -> None:
        """Set the vector column of a store created before :data:`VECTOR_STORAGE` (:meth:`_setup` found it) to keep
        new vectors in their rows.

        A change of the table's definition only (no rewrite); it waits at most 2 s for its lock (another process
        may be building the HNSW index) and is otherwise left for the next open: it only makes later reads faster.
        """
        import psycopg

        try:
            with self._tx() as cur:
                cur.execute("SET LOCAL lock_timeout = '2s'")
                cur.execute(VECTOR_STORAGE)
        except psycopg.errors.LockNotAvailable:
            log("store.vector_storage_deferred")

    def close(self) -> None:
        self._engine.dispose()

    def drop(self) -> None:
        """Remove the tables (``bastion rebuild``: the index is derived and is re-made from the catalog)."""
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
            cur.execute(f"DROP TABLE IF EXISTS {LABELS}, {STATS}, {TERMS}, {CHUNKS}, {META}")
        self._ann_built = None

    # -- writes -----------------------------------------------------------------------------
    def replace_documents(self, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """Atomically make ``chunks`` the only chunks of ``doc_ids`` (none: delete them), in one transaction.

        Writers of the same documents queue on per-document advisory locks taken in a fixed order, so two
        concurrent replaces of a document cannot both delete the old rows and leave two new versions.
        """
        if doc_ids:
            with self._tx() as cur:
                self._replace(cur, doc_ids, chunks)

    def replace_documents_in(self, session: Session, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """:meth:`replace_documents` inside the catalog's open transaction ``session``, committing nothing.

        Only for a catalog this store :meth:`shares_database_with`: the chunks are written on the session's own
        connection, so the session's commit publishes them together with its catalog rows, and its rollback (an
        error, a killed process) leaves both as they were.
        """
        if not doc_ids:
            return
        import psycopg
        from pgvector.psycopg.halfvec import register_halfvec_info
        from pgvector.psycopg.vector import register_vector_info
        from psycopg.types import TypeInfo

        conn = session.connection().connection.driver_connection
        if not isinstance(conn, psycopg.Connection):
            raise StoreError("the catalog's database connection is not a psycopg one: the chunk store cannot write "
                             "in its transaction (use a postgresql+psycopg:// catalog url)")
        with conn.cursor() as cur:
            # on this cursor only (the catalog's connection stays as it was); the function is typed for a
            # connection but needs only an adaptation context, which a cursor is
            register_vector_info(cur, TypeInfo.fetch(conn, "vector"))  # type: ignore[arg-type]
            register_halfvec_info(cur, TypeInfo.fetch(conn, "halfvec"))  # type: ignore[arg-type]
            self._replace(cur, doc_ids, chunks)

    def shares_database_with(self, catalog: Catalog) -> bool:
        """Whether ``catalog`` lives in this store's database, reached as the same user through psycopg, so that
        :meth:`replace_documents_in` can write the chunks in the catalog's own transaction.

        Decided by what the two connections report, not by how the URLs are spelled: the same server (its
        system identifier where the user may read it, and its start time, which tells a replica from its
        primary), the same database and user, and the same store tables (by oid: another ``search_path`` or
        schema is another place).
        """
        import psycopg

        if catalog.engine.dialect.name != "postgresql":
            return False
        raw = catalog.engine.raw_connection()
        try:
            conn = raw.driver_connection
            if not isinstance(conn, psycopg.Connection):
                return False
            with conn.cursor() as cur:
                theirs = self._database_identity(cur)
            conn.rollback()
        finally:
            raw.close()
        with self._tx() as cur:
            ours = self._database_identity(cur)
        return theirs == ours

    @staticmethod
    def _database_identity(cur: Any) -> tuple[Any, ...]:
        cur.execute("SELECT has_function_privilege('pg_control_system()', 'EXECUTE')")
        system = None
        if cur.fetchone()[0]:
            cur.execute("SELECT system_identifier FROM pg_control_system()")
            system = cur.fetchone()[0]
        cur.execute("SELECT pg_postmaster_start_time(), current_database(), current_user, "
                    "(SELECT array_agg(to_regclass(t)::oid ORDER BY t) FROM unnest(%s::text[]) AS t)",
                    ([META, CHUNKS, TERMS, STATS],))
        return (system, *cur.fetchone())

    def _replace(self, cur: Any, doc_ids: list[str], chunks: list[StoredChunk]) -> None:
        """The statements of :meth:`replace_documents` on ``cur``, in its open transaction."""
        for c in chunks:
            if c.vector.shape != (self.dimension,):
                raise EmbedderMismatch(f"vector of chunk {c.chunk_id} has shape {c.vector.shape}, index expects ({self.dimension},)")
        scope = sorted(set(doc_ids))
        stray = sorted({c.doc_id for c in chunks} - set(scope))
        if stray:
            raise StoreError(f"chunks of documents not being replaced: {', '.join(stray[:5])}")
        counts = [Counter(c.terms.split()) for c in chunks]
        dfs: Counter[str] = Counter()
        for cnt in counts:
            dfs.update(cnt.keys())
        delta = {"docs": scope, "terms": ["", *dfs], "dfs": [len(chunks), *dfs.values()],
                 "totals": [sum(sum(cnt.values()) for cnt in counts)] + [0] * len(dfs)}
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(d)) FROM unnest(%s::text[]) AS d", (LOCK_SPACE, scope))
        cur.execute(stats_update_sql(), delta)  # deletes the old terms rows and moves the statistics
        cur.execute(f"DELETE FROM {CHUNKS} WHERE doc_id = ANY(%s::text[])", (scope,))
        # the per-label copies, wherever the table exists (another process may have made it): never left stale
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (LABELS,))
        copies = bool(cur.fetchone()[0])
        if copies:
            cur.execute(f"DELETE FROM {LABELS} WHERE doc_id = ANY(%s::text[])", (scope,))
        if not chunks:
            return
        # binary COPY: pgvector's text form of a vector costs more to write than everything else together
        with cur.copy(f"COPY {CHUNKS} ({', '.join(ROW_COLUMNS)}, acl, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(CHUNK_TYPES)
            for c in chunks:
                copy.write_row([getattr(c, name) for name in ROW_COLUMNS]
                               + [list(c.acl), np.asarray(c.vector, dtype=np.float32)])
        with cur.copy(f"COPY {TERMS} (chunk_id, doc_id, source, acl, nterms, keys, tfs) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(TERM_TYPES)
            for c, cnt in zip(chunks, counts):
                copy.write_row([c.chunk_id, c.doc_id, c.source, list(c.acl), sum(cnt.values()),
                                list(cnt), list(cnt.values())])
        if copies:
            from pgvector import HalfVector

            with cur.copy(f"COPY {LABELS} (label, chunk_id, doc_id, source, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "text", "text", "text", "halfvec"])
                for c in chunks:
                    half = HalfVector(np.asarray(c.vector, dtype=np.float16))
                    for label in sorted(set(c.acl)):
                        copy.write_row([label, c.chunk_id, c.doc_id, c.source, half])

    def optimize(self) -> None:
        """Build the HNSW index once the table holds ``ann_min_rows`` rows (pgvector maintains it on every
        insert after that), refresh the planner's statistics and merge the GIN indexes' pending entries."""
        with self._tx() as cur:
            cur.execute(f"ANALYZE {CHUNKS}")
            cur.execute(f"ANALYZE {TERMS}")
            # new GIN entries wait in a pending list that every search reads through until merged (by autovacuum,
            # some time later): merge them now, so the first searches after a sync are not the slow ones
            cur.execute("SELECT gin_clean_pending_list(i::regclass) FROM unnest(%s::text[]) AS i",
                        ([f"{CHUNKS}_acl", f"{TERMS}_acl", f"{TERMS}_keys"],))
        if self.label_vectors:
            # the copies' new pages marked all-visible, so that the exact ranking reads them from the index alone
            # rather than visiting each changed row until autovacuum comes by
            with self._autocommit() as conn:
                conn.execute(f"VACUUM (ANALYZE) {LABELS}")
        if self._has_ann() or self.count() < self.ann_min_rows:
            return
        with self._autocommit() as conn:  # CREATE INDEX CONCURRENTLY: writers are not blocked while it builds
            # a build that failed (killed, cancelled, a deadlock) leaves an INVALID index under the same name,
            # which IF NOT EXISTS would keep for good: drop it and build again
            row = conn.execute("SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                               "WHERE c.relname = %s", (f"{CHUNKS}_embedding",)).fetchone()
            if row and row[0]:
                log("store.hnsw_invalid_dropped")
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {CHUNKS}_embedding")
            conn.execute(f"SET maintenance_work_mem = '{int(self.build_memory_mb)}MB'")
            conn.execute(hnsw_ddl(self.hnsw_m, self.ef_construction))
            conn.execute("RESET maintenance_work_mem")
        log("store.hnsw_built", rows=self.count())
        self._ann_built = None

    def _has_ann(self) -> bool:
        """Whether a valid HNSW index exists (cached once found; an index is never dropped while open)."""
        with self._ann_lock:
            if self._ann_built:
                return True
            with self._tx() as cur:
                cur.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE c.relname = %s", (f"{CHUNKS}_embedding",))
                row = cur.fetchone()
            self._ann_built = bool(row and row[0])
            return self._ann_built

    # -- reads ------------------------------------------------------------------------------
    def _exact_dense(self, cur: Any, labels: frozenset[str], source: SourceFilter) -> bool:
        """Whether to rank by vector exactly over the rows the ACL index admits rather than walk the HNSW index:
        for few readable chunks (``exact_threshold``), or for a small share of the table (``dense_exact_share``,
        at most ``dense_exact_rows`` chunks). A filtered walk meets about ``k / share`` rows to find k readable
        ones, each costing graph steps and a heap visit, and its recall drops as the share does; the exact scan
        costs one heap visit per readable chunk and misses none."""
        readable = self._readable(cur, labels, source)
        if readable <= self.exact_threshold:
            return True
        return readable <= self.dense_exact_rows and readable <= self.dense_exact_share * self._table_rows(cur)

    def _readable(self, cur: Any, labels: frozenset[str], source: SourceFilter) -> int:
        """How many chunks ``labels`` (and ``source``) admit, counted up to one past the largest threshold that
        needs it (reads at most that many entries of the ACL index), remembered for ``path_ttl_s`` seconds per
        filter. A stale count only picks the slower of two correct plans: every plan applies the ACL in its
        query, and a walk that finds fewer than k rows falls back to the exact ranking."""
        key = (labels, source if source is None or isinstance(source, str) else tuple(sorted(set(source))))
        now = time.monotonic()
        with self._ann_lock:
            cached = self._paths.get(key)
        if cached is not None and now - cached[1] < self.path_ttl_s:
            return cached[0]
        readable = self._count_at_most(cur, *acl_where(labels, source, "t."), self._count_cap())
        with self._ann_lock:
            if len(self._paths) >= 4096:
                self._paths.clear()
            self._paths[key] = (readable, now)
        return readable

    def _count_at_most(self, cur: Any, where: str, params: dict[str, Any], n: int) -> int:
        """How many chunks ``where`` admits, or ``n + 1`` when more (reads at most n + 1 entries of the ACL index)."""
        if n <= 0:
            return 1
        cur.execute("SELECT set_config('enable_seqscan', 'off', true)")
        cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {TERMS} t WHERE {where} LIMIT %(n)s) s", params | {"n": n + 1})
        readable = int(cur.fetchone()[0])
        cur.execute("SELECT set_config('enable_seqscan', 'on', true)")
        return readable

    def _table_rows(self, cur: Any) -> int:
        """The chunk table's row count as the planner last estimated it (``ANALYZE``, autovacuum), remembered
        for ``path_ttl_s`` seconds; counted when the table was never analysed."""
        rows, when = self._rows
        now = time.monotonic()
        if rows >= 0 and now - when < self.path_ttl_s:
            return rows
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", (CHUNKS,))
        row = cur.fetchone()
        rows = int(row[0]) if row and row[0] is not None else -1
        if rows < 0:
            cur.execute(f"SELECT count(*) FROM {CHUNKS}")
            rows = int(cur.fetchone()[0])
        self._rows = (rows, now)
        return rows

    def _dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter, columns: str) -> list[tuple[Any, ...]]:
        """Rows (``columns``, then the cosine distance) of the top-k chunks ``labels`` may read."""
        where, params = acl_where(labels, source, "c.")
        params |= {"v": np.asarray(vector, dtype=np.float32), "k": k}
        query = (f"WITH hits AS MATERIALIZED (SELECT {columns}, c.embedding <=> %(v)s AS distance FROM {CHUNKS} c "
                 f"WHERE {where} ORDER BY distance LIMIT %(k)s) SELECT * FROM hits ORDER BY distance, chunk_id")
        with self._tx() as cur:
            exact = not self._has_ann() or self._exact_dense(cur, labels, source)
            if not exact:
                # the readable set is large: walk the HNSW index (the planner, estimating the ACL's selectivity
                # from sampled statistics, might otherwise rank a mid-sized group by a full bitmap scan and sort)
                cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                            "set_config('hnsw.ef_search', %s, true), set_config('hnsw.max_scan_tuples', %s, true), "
                            "set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)",
                            (str(min(max(self.ef_search, k), 1000)), str(self.max_scan_tuples)))
                cur.execute(query, params)
                rows = cur.fetchall()
                if len(rows) >= k:
                    return list(rows)
                log("store.iterative_scan_short", found=len(rows), k=k)  # the walk gave up: rank exactly
            if self.label_vectors:
                return self._exact_from_copies(cur, vector, labels, k, source, columns)
            cur.execute("SELECT set_config('enable_indexscan', 'off', true), set_config('enable_bitmapscan', 'on', true), "
                        "set_config('enable_seqscan', 'on', true)")  # no HNSW: the exact order
            cur.execute(query, params)
            return list(cur.fetchall())

    def _exact_from_copies(self, cur: Any, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter,
                           columns: str) -> list[tuple[Any, ...]]:
        """The exact top-k read from the per-label copies (:data:`LABELS`): the ``2k + 20`` chunks nearest by the
        half-precision vectors, then their rows, which pass the ACL predicate again, ranked by their full vectors.
        Half precision moves a cosine distance by about 1e-3, far less than the gap between the k-th and the 2k-th
        neighbour, so the final order is the full vectors' own."""
        from pgvector import HalfVector

        near, params = label_where(labels, source, "a.")
        where, _ = acl_where(labels, source, "c.")
        pool = 2 * k + 20
        params |= {"v": np.asarray(vector, dtype=np.float32), "h": HalfVector(np.asarray(vector, dtype=np.float16)),
                   "k": k, "pool": pool, "wide": pool * len(labels)}
        # the copies by their index alone (consecutive entries per label), sorted by distance: a chunk under several of
        # the principal's labels has the same distance in each, so its copies sit together and the nearest
        # pool x labels entries hold the nearest pool chunks (a grouping of every entry instead cost twice the scan);
        # then the full rows by primary key, and the final order over a materialized handful, so that no plan ranks
        # it by walking the HNSW index; no parallel workers (starting them cost more than the scan)
        cur.execute("SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), "
                    "set_config('enable_indexscan', 'on', true), set_config('max_parallel_workers_per_gather', '0', true)")
        cur.execute(f"""
            WITH copies AS MATERIALIZED (SELECT a.chunk_id, a.embedding <=> %(h)s AS d FROM {LABELS} a WHERE {near}
                                         ORDER BY d, a.chunk_id LIMIT %(wide)s),
            near AS MATERIALIZED (SELECT DISTINCT d, chunk_id FROM copies ORDER BY d, chunk_id LIMIT %(pool)s),
            hits AS MATERIALIZED (SELECT {columns}, c.embedding <=> %(v)s AS distance FROM {CHUNKS} c
                                  WHERE c.chunk_id IN (SELECT chunk_id FROM near) AND {where} OFFSET 0)
            SELECT * FROM hits ORDER BY distance, chunk_id LIMIT %(k)s""", params)
        return list(cur.fetchall())

    def rank_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None) -> list[Ranked]:
        """Ids and cosine similarities of the top-k chunks ``labels`` may read, best first."""
        return [Ranked(cid, 1.0 - float(d)) for cid, d in self._dense(vector, labels, k, source, "c.chunk_id")]

    def search_dense(self, vector: np.ndarray, labels: frozenset[str], k: int, source: SourceFilter = None) -> list[StoreHit]:
        """Full rows of the top-k chunks ``rank_dense`` would return, read by the same query."""
        rows = self._dense(vector, labels, k, source, _ROWS)
        return [StoreHit(row=dict(zip(ROW_COLUMNS, r[:-1])), score=1.0 - float(r[-1])) for r in rows]

    def rank_terms(self, terms: list[str], labels: frozenset[str], k: int, source: SourceFilter = None, *,
                   exact: bool = False) -> list[Ranked]:
        """Ids and scores of the top-k chunks ``labels`` may read by BM25.

        A principal who may read at most ``exact_threshold`` chunks (or any, with ``exact=True``) gets BM25
        scores computed with statistics of its readable chunks only. For everyone else those statistics
        cost a pass over a large share of the table per query, so the order comes from whole-table statistics
        (:meth:`_rank_terms_table`), and, as the protocol requires of such a store, the score is derived from
        the rank alone (:func:`~bastion.stores.lance_schema.rank_score`, the Lance store's): how often a word
        occurs in chunks the principal may not read never shows in a number.
        """
        if not terms:
            return []
        distinct = list(dict.fromkeys(terms))
        where, params = acl_where(labels, source, "t.")
        with self._tx() as cur:
            readable = self._readable(cur, labels, source)
            if not exact and readable > self.exact_threshold:
                ids = self._rank_terms_table(cur, distinct, where, params, k, readable)
                return [Ranked(cid, rank_score(i)) for i, cid in enumerate(ids)]
            cur.execute(bm25_sql(where, acl_first=readable <= self.exact_threshold), params | {"terms": distinct, "k": k})
            return [Ranked(cid, float(score)) for cid, score in cur.fetchall()]

    def _rank_terms_table(self, cur: Any, terms: list[str], where: str, params: dict[str, Any], k: int,
                          readable: int) -> list[str]:
        """The top-k readable chunk ids by BM25 with whole-table statistics, MaxScore-pruned.

        A query term holding in a chunk adds at most ``idf * (k1 + 1)`` to its score. The terms are taken
        rarest first: the candidates are the readable chunks holding one of the first ("essential") terms,
        each scored with every query term it holds. When the k-th best of them already scores above the
        summed bounds of the remaining (common) terms, no chunk holding only those could enter the top k,
        and the result is the exact top k. The first essential terms are those whose summed document
        frequencies stay within ``terms_budget``; when the check fails, the next term joins while the sum stays
        within the larger of that and 5 % of the table (each such round reads only the chunks holding the new
        term and no earlier one, and merges them with the best k so far); past it, the chunks holding only common terms
        are sampled: the first ``terms_fill_cap`` readable ones are scored and merged in. That happens mostly
        when fewer than k readable chunks hold a rarer term (a principal reading a tenth of the table, k = 50),
        and only changes which chunks scored by common words alone (nearly tied) fill the list.

        ``readable``: how many chunks the principal may read (:meth:`_readable`, capped), which decides how the
        candidates are read (:meth:`_terms_first`).
        """
        cur.execute(f"SELECT term, df, total FROM {STATS} WHERE term = ANY(%s::text[])", (["", *terms],))
        stats = {term: (int(df), int(total)) for term, df, total in cur.fetchall()}
        n, total = stats.pop("", (0, 0))
        present = sorted((df, term) for term, (df, _) in stats.items() if df > 0)
        if n <= 0 or not present:
            return []
        idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for df, term in present}
        order = [term for _, term in present]
        essential, seen = 1, present[0][0]
        while essential < len(order) and seen + present[essential][0] <= self.terms_budget:
            seen += present[essential][0]
            essential += 1
        args = params | {"terms": order, "idfs": [idf[t] for t in order], "avgdl": total / n, "k": k}
        rows: list[tuple[str, float]] = []  # the best k of the candidates read so far, best first
        done, reading = 0, seen  # essential terms whose candidates were read; the new terms' summed frequency

        def merge(fetched: list[tuple[str, float]]) -> list[tuple[str, float]]:
            return sorted(rows + fetched, key=lambda r: (-r[1], r[0]))[:k]

        while True:
            # each round reads only the chunks holding a newly essential term and none read before: the best k
            # of the earlier candidates are kept, so the top k of the union is the merge of the two
            cur.execute(bm25_table_sql(where, len(order), terms_first=self._terms_first(readable, reading), exclude=done > 0),
                        args | {"essential": order[done:essential], "before": order[:done]})
            rows = merge([(cid, float(score)) for cid, score in cur.fetchall()])
            rest = order[essential:]
            if not rest or (len(rows) >= k and rows[-1][1] > sum(idf[t] for t in rest) * (K1 + 1)):
                return [cid for cid, _ in rows]
            if seen + present[essential][0] <= max(self.terms_budget, n // 20):
                done, reading = essential, present[essential][0]
                seen += reading
                essential += 1
                continue
            cur.execute(bm25_table_sql(where, len(order), capped=True),
                        args | {"essential": order[:essential], "rest": rest, "cap": max(self.terms_fill_cap, k)})
            return [cid for cid, _ in merge([(cid, float(score)) for cid, score in cur.fetchall()])]

    def _terms_first(self, readable: int, candidates: int) -> bool:
        """Whether BM25 reads the ``candidates`` chunks holding the essential terms first and tests the ACL on each,
        rather than intersecting the terms index with the ACL index: when the principal may read more than the count
        checks (:meth:`_readable` stopped counting), or more than ``acl_bitmap_ratio`` times the candidates. Marking
        a readable chunk in the ACL bitmap costs about a tenth of reading a candidate's row (at 1M chunks: 25 ms for
        the 100,000 of a 10 % principal, against 7 ms for 2,900 candidates)."""
        return readable > self._count_cap() or readable > self.acl_bitmap_ratio * candidates

    def _count_cap(self) -> int:
        """How far :meth:`_readable` counts a principal's chunks (the largest threshold that needs the count)."""
        return max(self.exact_threshold, self.dense_exact_rows if self.dense_exact_share > 0 else 0)

    def fetch(self, ranked: Sequence[tuple[str, float]], labels: frozenset[str], source: SourceFilter = None) -> list[StoreHit]:
        """Full rows of the ranked ids, in the given order, only those ``labels`` (and ``source``) admit."""
        if not ranked:
            return []
        where, params = acl_where(labels, source, "c.")
        with self._tx() as cur:
            cur.execute(f"SELECT {_ROWS} FROM {CHUNKS} c WHERE c.chunk_id = ANY(%(ids)s::text[]) AND {where}",
                        params | {"ids": sorted({cid for cid, _ in ranked})})
            rows = {r[0]: dict(zip(ROW_COLUMNS, r)) for r in cur.fetchall()}
        return [StoreHit(row=dict(rows[cid]), score=score) for cid, score in ranked if cid in rows]

    def chunk_keys(self) -> list[tuple[str, str, str]]:
        """(chunk_id, doc_id, version_id) of every stored chunk (for checks and rebuilds)."""
        with self._tx() as cur:
            cur.execute(f"SELECT chunk_id, doc_id, version_id FROM {CHUNKS}")
            return [tuple(r) for r in cur.fetchall()]

    def rows_for(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        """Every row of ``doc_ids`` (citation fields and ACL, no vector); callers check the ACL themselves."""
        if not doc_ids:
            return []
        with self._tx() as cur:
            cur.execute(f"SELECT {_ROWS}, c.acl FROM {CHUNKS} c WHERE c.doc_id = ANY(%s::text[])", (list(doc_ids),))
            return [dict(zip([*ROW_COLUMNS, "acl"], r)) for r in cur.fetchall()]

    def count(self) -> int:
        """Rows in the table."""
        with self._tx() as cur:
            cur.execute(f"SELECT count(*) FROM {CHUNKS}")
            return int(cur.fetchone()[0])

    def disk_bytes(self) -> int:
        """The tables' and their indexes' size on disk (for benchmarks and `bastion doctor`)."""
        with self._tx() as cur:
            cur.execute("SELECT sum(pg_total_relation_size(to_regclass(t))) FROM unnest(%s::text[]) AS t",
                        ([CHUNKS, TERMS, STATS, META, LABELS],))
            return int(cur.fetchone()[0] or 0)


def store_url(config: WorkspaceConfig) -> Any:
    """The store's database: ``[store] url`` / ``password_env``, else the catalog's when it is on PostgreSQL."""
    from sqlalchemy.engine import make_url

    s, c = config.store, config.catalog
    if s.url is not None:
        return resolve_url(s.url, s.password_env, "store.url")
    if c.url is not None and make_url(c.url).get_backend_name() == "postgresql":
        return resolve_url(c.url, c.password_env, "catalog.url")
    raise ConfigError("store.backend = 'pgvector' needs a PostgreSQL database: set [store] url (and password_env), "
                      "or put the catalog on PostgreSQL ([catalog] url, docs/postgres.md), whose database it then shares")


def open_store(config: WorkspaceConfig, embedder_id: str, dimension: int) -> PgVectorStore:
    """The workspace's pgvector store, as ``[store]`` configures it."""
    s = config.store
    return PgVectorStore(store_url(config), embedder_id=embedder_id, dimension=dimension, ef_search=s.ef_search,
                         exact_threshold=s.exact_threshold, dense_exact_share=s.dense_exact_share,
                         dense_exact_rows=s.dense_exact_rows, label_vectors=s.label_vectors, ann_min_rows=s.ann_min_rows, hnsw_m=s.hnsw_m,
                         ef_construction=s.hnsw_ef_construction, pool_size=s.pool_size,
                         build_memory_mb=s.index_build_memory_mb,
                         connect_timeout_s=config.catalog.connect_timeout_s)


def drop_tables(config: WorkspaceConfig) -> None:
    """Remove the store's tables whatever embedder built them (``bastion rebuild``)."""
    import psycopg

    dsn = store_url(config).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=config.catalog.connect_timeout_s) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {LABELS}, {STATS}, {TERMS}, {CHUNKS}, {META}")
