"""The PostgreSQL chunk tables' layout: DDL, the ACL predicate, the BM25 query and the connection URL.

Pure SQL text and small helpers shared by :class:`~bastion.stores.pgvector.PgVectorStore`; nothing here
opens a connection except :func:`engine`, which builds the pool.

Three tables, written in the same transaction:

* ``bastion_chunks``: one row per chunk, its text and citation fields, ACL labels (``text[]``, GIN
  index), ``doc_id`` (btree) and the vector (``vector(dim)``, HNSW index with ``vector_cosine_ops``
  once the table is large enough, :meth:`PgVectorStore.optimize`).
* ``bastion_chunk_terms``: per chunk, its distinct analysed terms (``text[]``, GIN index), their
  counts (``int[]``, same order), the number of terms, a copy of the ACL labels and the source. It is
  kept apart from the wide chunk rows (a 384-dimension vector alone is 1.5 kB) so that the BM25
  statistics over a principal's readable chunks (count and mean length) scan rows a third as wide.
* ``bastion_term_stats``: whole-table BM25 statistics (document frequency per term; the row of term
  ``''`` holds the number of chunks and their summed length), for the ranking of principals who read
  more than ``exact_threshold`` chunks (:meth:`PgVectorStore._rank_terms_table`).

The analysed terms (:mod:`bastion.retrieval.analyzer`, Chinese bigrams included) are stored as
arrays, never run through a PostgreSQL text-search parser, so no term is split or changed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bastion.core.errors import MissingExtraError, StoreError

__all__ = ["CHUNKS", "LABELS", "META", "ROW_COLUMNS", "STATS", "TERMS", "VECTOR_STORAGE", "acl_where", "bm25_sql", "bm25_table_sql", "ddl",
           "engine", "label_vectors_ddl", "label_vectors_fit", "label_where", "resolve_url", "stats_backfill_sql", "stats_update_sql"]

CHUNKS, TERMS, META = "bastion_chunks", "bastion_chunk_terms", "bastion_store_meta"
LABELS = "bastion_label_vectors"  # optional ([store] label_vectors): a half-precision vector copy per chunk and ACL label
STATS = "bastion_term_stats"  # whole-table BM25 statistics: df per term; the row of term '' holds N and total length
# the columns a hit shows (as LanceStore's rows: chunk id, text and the citation fields)
ROW_COLUMNS = ["chunk_id", "doc_id", "version_id", "source", "document", "path", "page", "section",
               "ordinal", "text", "char_start", "char_end"]
K1, B = 1.2, 0.75  # BM25 constants, those of bastion.stores.postings (LanceDB's)
LOCK_SPACE = 0x62617374  # advisory lock namespace ("bast"): schema creation (key 0) and documents being replaced


def ddl(dim: int) -> list[str]:
    """The statements that create the tables and their always-present indexes (idempotent)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {META} (key text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS {CHUNKS} (
            chunk_id text PRIMARY KEY, doc_id text NOT NULL, version_id text NOT NULL, source text,
            document text, path text, page integer, section text, ordinal integer, text text,
            char_start integer, char_end integer, acl text[] NOT NULL, embedding vector({dim}) NOT NULL)""",
        VECTOR_STORAGE,
        f"CREATE INDEX IF NOT EXISTS {CHUNKS}_doc ON {CHUNKS} (doc_id)",
        f"CREATE INDEX IF NOT EXISTS {CHUNKS}_acl ON {CHUNKS} USING gin (acl)",
        f"""CREATE TABLE IF NOT EXISTS {TERMS} (
            chunk_id text PRIMARY KEY, doc_id text NOT NULL, source text, acl text[] NOT NULL,
            nterms integer NOT NULL, keys text[] NOT NULL, tfs integer[] NOT NULL)""",
        f"CREATE INDEX IF NOT EXISTS {TERMS}_doc ON {TERMS} (doc_id)",
        f"CREATE INDEX IF NOT EXISTS {TERMS}_acl ON {TERMS} USING gin (acl)",
        f"CREATE INDEX IF NOT EXISTS {TERMS}_keys ON {TERMS} USING gin (keys)",
        f"CREATE TABLE IF NOT EXISTS {STATS} (term text PRIMARY KEY, df bigint NOT NULL, total bigint NOT NULL)",
    ]


# The vector stays in the row (STORAGE MAIN) rather than pgvector's default EXTERNAL, which moved it to the TOAST
# table whenever text and vector together passed PostgreSQL's ~2 kB threshold (a fifth of the rows with 384
# dimensions): every exact ranking then read it through the TOAST index, a third of the scan's time. Rows written
# before the setting keep their place until their document is written again (a sync, or `bastion rebuild`).
VECTOR_STORAGE = f"ALTER TABLE {CHUNKS} ALTER COLUMN embedding SET STORAGE MAIN"


def label_vectors_fit(dim: int) -> bool:
    """Whether a ``dim``-dimension half-precision vector fits in a btree entry (about 2,700 bytes with the label,
    source and chunk id): up to 1,200 dimensions."""
    return dim <= 1200


def label_vectors_ddl(dim: int) -> list[str]:
    """The optional table of per-label vector copies, its indexes, and its fill from the chunks table.

    One row per chunk and label of its ACL, with the vector as ``halfvec``. The btree ``(label) INCLUDE (source,
    chunk_id, embedding)`` keeps the entries of one label side by side, so that ranking the chunks of a principal
    who may read few of them is an index-only scan of consecutive pages; in the chunks table the same rows lie
    scattered, a page each.
    """
    return [
        # made afresh: a table left without its "complete" mark (dropped by hand halfway) is not trusted
        f"DROP TABLE IF EXISTS {LABELS}",
        f"""CREATE TABLE {LABELS} (label text NOT NULL, chunk_id text NOT NULL, doc_id text NOT NULL,
            source text, embedding halfvec({dim}) NOT NULL)""",
        f"INSERT INTO {LABELS} (label, chunk_id, doc_id, source, embedding) "
        f"SELECT l, c.chunk_id, c.doc_id, c.source, c.embedding::halfvec FROM {CHUNKS} c CROSS JOIN unnest(c.acl) AS l",
        f"CREATE INDEX {LABELS}_rank ON {LABELS} (label) INCLUDE (source, chunk_id, embedding)",
        f"CREATE INDEX {LABELS}_doc ON {LABELS} (doc_id)",
        f"ANALYZE {LABELS}",
    ]


def stats_backfill_sql() -> str:
    """Fill an empty statistics table from the terms table (a store created before the table existed)."""
    return f"""
    INSERT INTO {STATS} (term, df, total)
    SELECT '', count(*), coalesce(sum(nterms), 0) FROM {TERMS}
    UNION ALL SELECT k, count(*), 0 FROM {TERMS} t CROSS JOIN unnest(t.keys) AS k GROUP BY k
    ON CONFLICT (term) DO NOTHING"""


def stats_update_sql() -> str:
    """Delete the terms rows of ``%(docs)s`` and apply the change to the whole-table statistics, together:
    minus the deleted rows' terms, plus the new chunks' (``%(terms)s``, ``%(dfs)s``, ``%(totals)s``: per
    term its number of new chunks, and the row ``''`` with the new chunks' count and summed length).

    The rows are upserted in term order, so two writers of different documents lock the terms they share
    in the same order and queue instead of deadlocking.
    """
    return f"""
    WITH gone AS (DELETE FROM {TERMS} WHERE doc_id = ANY(%(docs)s::text[]) RETURNING keys, nterms),
    delta AS (SELECT k AS term, -count(*) AS df, 0::bigint AS total FROM gone CROSS JOIN unnest(gone.keys) AS k GROUP BY k
              UNION ALL SELECT '', -count(*), -coalesce(sum(nterms), 0) FROM gone
              UNION ALL SELECT * FROM unnest(%(terms)s::text[], %(dfs)s::bigint[], %(totals)s::bigint[])),
    sums AS (SELECT term, sum(df)::bigint AS df, sum(total)::bigint AS total FROM delta GROUP BY term)
    INSERT INTO {STATS} (term, df, total) SELECT term, df, total FROM sums WHERE df <> 0 OR total <> 0 ORDER BY term
    ON CONFLICT (term) DO UPDATE SET df = {STATS}.df + EXCLUDED.df, total = {STATS}.total + EXCLUDED.total"""


def hnsw_ddl(m: int, ef_construction: int) -> str:
    """The vector index (built once the table holds enough rows; maintained on every insert after)."""
    return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {CHUNKS}_embedding ON {CHUNKS} USING hnsw "
            f"(embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")


def acl_where(labels: frozenset[str], source: str | Sequence[str] | None, alias: str = "") -> tuple[str, dict[str, Any]]:
    """The predicate (and its parameters) admitting only chunks whose ACL shares a label with ``labels``.

    An empty ACL shares no label, so it admits nobody. ``source`` narrows it to one source or several
    (an empty list admits none).

    >>> acl_where(frozenset({"group:hr", "user:eve"}), "wiki", "c.")
    ('c.acl && %(labels)s::text[] AND c.source = %(source)s', {'labels': ['group:hr', 'user:eve'], 'source': 'wiki'})
    """
    return _with_source(f"{alias}acl && %(labels)s::text[]", labels, source, alias)


def label_where(labels: frozenset[str], source: str | Sequence[str] | None, alias: str = "") -> tuple[str, dict[str, Any]]:
    """:func:`acl_where` for the rows of :data:`LABELS`: one row per label, so the row's label is one of ``labels``.

    >>> label_where(frozenset({"group:hr"}), None, "a.")
    ('a.label = ANY(%(labels)s::text[])', {'labels': ['group:hr']})
    """
    return _with_source(f"{alias}label = ANY(%(labels)s::text[])", labels, source, alias)


def _with_source(where: str, labels: frozenset[str], source: str | Sequence[str] | None, alias: str) -> tuple[str, dict[str, Any]]:
    if not labels:
        raise StoreError("a query needs at least one principal label")
    params: dict[str, Any] = {"labels": sorted(labels)}
    if isinstance(source, str):
        where += f" AND {alias}source = %(source)s"
        params["source"] = source
    elif source is not None:
        where += f" AND {alias}source = ANY(%(source)s::text[])"
        params["source"] = sorted(set(source))
    return where, params


def bm25_sql(where: str, *, acl_first: bool = False) -> str:
    """BM25 of the query terms (``%(terms)s``, distinct) over the chunks ``where`` admits, top ``%(k)s``.

    Every statistic comes from the admitted chunks only: their count and mean length, and each
    term's document frequency among them (so nothing about chunks the principal may not read moves a
    score). Same formula as :func:`bastion.stores.postings.bm25`: idf = ln(1 + (N - df + 0.5) /
    (df + 0.5)), k1 = 1.2, b = 0.75; ties in chunk id order. Each step is materialized, so that a plan
    made without statistics (a table not analysed yet) cannot re-run the statistics per candidate.
    ``acl_first``: the admitted chunks are read through the ACL index alone and each tested for the terms (for a
    principal who may read few chunks: PostgreSQL otherwise intersected the ACL index with the terms index,
    building a bitmap of every chunk holding a common query word, 150,000 of 1M, for 50 readable chunks).
    """
    rows = f"(SELECT * FROM {TERMS} t WHERE {where} OFFSET 0) t" if acl_first else f"{TERMS} t"
    return f"""
    WITH stats AS MATERIALIZED (SELECT count(*)::float8 AS n, avg(nterms)::float8 AS avgdl FROM {TERMS} t WHERE {where}),
    cand AS MATERIALIZED (SELECT t.chunk_id, t.nterms, q.term, t.tfs[array_position(t.keys, q.term)] AS tf
             FROM {rows} CROSS JOIN unnest(%(terms)s::text[]) AS q(term)
             WHERE t.keys && %(terms)s::text[] AND {where} AND q.term = ANY(t.keys)),
    df AS MATERIALIZED (SELECT term, count(*)::float8 AS df FROM cand GROUP BY term)
    SELECT cand.chunk_id,
           sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
               * cand.tf * {K1 + 1}::float8 / (cand.tf + {K1}::float8 * (1 - {B}::float8 + {B}::float8 * cand.nterms / stats.avgdl))) AS score
    FROM cand JOIN df USING (term) CROSS JOIN stats
    GROUP BY cand.chunk_id ORDER BY score DESC, cand.chunk_id LIMIT %(k)s"""


def bm25_table_sql(where: str, nterms: int, *, capped: bool = False, terms_first: bool = False, exclude: bool = False) -> str:
    """The top ``%(k)s`` chunks ``where`` admits among those holding an ``%(essential)s`` term, by BM25 with
    whole-table statistics: each query term's idf (``%(terms)s``, ``%(idfs)s``) and the mean length
    ``%(avgdl)s`` come from :data:`STATS`; ``nterms`` is the number of query terms. A candidate's score sums
    over every query term it holds, the non-essential ones included, so the caller can prove that no chunk
    holding only those could rank higher (:meth:`PgVectorStore.rank_terms`). ``capped``: the candidates are
    instead the first ``%(cap)s`` admitted chunks holding a ``%(rest)s`` term and no essential one (a bounded
    sample of a very common term's chunks). ``terms_first``: the chunks holding an essential term are read
    through the terms index alone and the ACL is tested on each (for a principal who may read more chunks than
    hold the terms: PostgreSQL otherwise intersected the two indexes, building a bitmap of every readable chunk,
    100,000 at 10 % of 1M chunks, for a few hundred candidates). The ACL predicate is in the WHERE clause like
    everywhere. ``exclude``: chunks holding a ``%(before)s`` term are left out (a later round of the caller's,
    which already scored them).
    """
    held = "t.keys && %(essential)s::text[]" + (" AND NOT t.keys && %(before)s::text[]" if exclude else "")
    if capped:
        # the admitted rows come from the ACL alone (OFFSET 0 keeps the term tests out of that scan), and each is
        # then tested for the terms until ``cap`` hold one; reading the common term's own index entries (most of
        # the table's) cost more than scoring the sample
        rows, cond = (f"(SELECT t.* FROM (SELECT * FROM {TERMS} t WHERE {where} OFFSET 0) t WHERE t.keys && %(rest)s::text[] "
                      f"AND NOT t.keys && %(essential)s::text[] LIMIT %(cap)s) t"), "true"
    elif terms_first:
        rows, cond = f"(SELECT * FROM {TERMS} t WHERE {held} OFFSET 0) t", where
    else:
        rows, cond = f"{TERMS} t", f"{held} AND {where}"
    # each query term's count in the candidate, looked up once (a term the chunk lacks has no position: NULL,
    # scoring 0), then one expression: a sub-query over the query terms ran a sub-plan per candidate, and an
    # inline lookup per use of the count did the array search twice
    # (and the candidate's length norm once: float8 constants, as a bare 0.75 made it numeric arithmetic, 4 times slower)
    tfs = ", ".join(f"t.tfs[array_position(t.keys, (%(terms)s::text[])[{j}])]::float8 AS tf{j}"
                    for j in range(1, nterms + 1)) or "0 AS tf0"
    score = " + ".join(f"coalesce((%(idfs)s::float8[])[{j}] * x.tf{j} / (x.tf{j} + x.norm), 0)"
                       for j in range(1, nterms + 1)) or "0"
    norm = f"{K1}::float8 * (1 - {B}::float8 + {B}::float8 * t.nterms / %(avgdl)s::float8) AS norm"
    return f"""
    SELECT t.chunk_id, ({score}) * {K1 + 1}::float8 AS score
    FROM {rows} CROSS JOIN LATERAL (SELECT {tfs}, {norm} OFFSET 0) x
    WHERE {cond}
    ORDER BY score DESC, t.chunk_id LIMIT %(k)s"""


def resolve_url(url: str, password_env: str | None, key: str) -> Any:
    """``url`` (no password in it) as a SQLAlchemy URL for psycopg, with the password from ``password_env``.

    The same rules as the catalog's ``[catalog] url`` / ``password_env`` (docs/postgres.md).
    """
    from sqlalchemy.engine import make_url

    from bastion.catalog.db import where

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StoreError(f"{key} must be a PostgreSQL URL for the pgvector store, e.g. "
                         f"'postgresql+psycopg://bastion@db.example:5432/bastion' (got a {parsed.get_backend_name()} URL)")
    parsed = parsed.set(drivername="postgresql+psycopg")
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise StoreError(f"{key.rsplit('.', 1)[0]}.password_env names {password_env}, which is not set: "
                             f"export the password of the {where(parsed)} in it")
        parsed = parsed.set(password=password)
    return parsed


def engine(url: Any, *, pool_size: int, connect_timeout_s: int) -> Any:
    """A connection pool (SQLAlchemy's) whose psycopg connections adapt numpy vectors to ``vector``."""
    try:
        import psycopg  # noqa: F401  (the driver, checked here to name the extra)
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise MissingExtraError("the pgvector store needs the pgvector extra: pip install 'bastion[pgvector]'") from exc
    from sqlalchemy import create_engine, event

    # jit off: PostgreSQL compiles a query whose estimated cost passes jit_above_cost (the BM25 statistics of a
    # large readable set, an exact scan of a mid-sized one), which cost 50-200 ms per query and saved nothing here
    eng = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                        connect_args={"connect_timeout": connect_timeout_s, "options": "-c jit=off"})
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        register_vector(dbapi_conn)
        # No server-side prepared statements: psycopg prepares a query after its 5th run, and PostgreSQL then
        # plans it once for any ACL labels and terms (a generic plan); the BM25 query's generic plan took
        # 100x longer than the plan made for the actual values.
        dbapi_conn.prepare_threshold = None

    event.listen(eng, "connect", on_connect)
    return eng
