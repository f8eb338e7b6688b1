"""``bastion doctor``'s probe of the pgvector chunk store (``[store] backend = "pgvector"``).

Read-only, like the rest of doctor: one connection, catalog queries only; nothing is created,
built or repaired (opening :class:`~bastion.stores.pgvector.PgVectorStore` would create the
extension and the tables, so the probe does not). It checks that the database answers, the
pgvector extension and its version, the tables, the HNSW index (present once the table holds
``ann_min_rows`` rows, and valid: a build that was interrupted leaves an INVALID index that
searches cannot use), the chunk rows against the chunks the catalog says are indexed, the
whole-table BM25 statistics, and the per-label vector copies (``[store] label_vectors``) against the
chunks' labels. Each problem is one line that says what to do.
"""
from __future__ import annotations

from typing import Any

from bastion.stores.pgvector_schema import CHUNKS, LABELS, META, STATS, TERMS

HNSW_INDEX = f"{CHUNKS}_embedding"
MIN_PGVECTOR = (0, 8)
REBUILD = " (or at once: `bastion rebuild`, which indexes every source again)"

_HNSW_SQL = """SELECT i.indisvalid, i.indisready, am.amname FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
               WHERE c.relname = %s"""


def pgvector_report(config: Any, catalog_chunks: int | None) -> tuple[dict[str, Any], list[str], list[str]]:
    """(report, problems, notes) of the workspace's pgvector store; ``catalog_chunks``: the chunks of the
    documents the catalog says are indexed (None when the catalog could not be read)."""
    try:
        import psycopg
    except ImportError:
        return {"reachable": False, "where": None}, ["store: [store] backend = \"pgvector\" needs the pgvector extra: pip install 'bastion[pgvector]'"], []
    from bastion.catalog.db import _reason, where
    from bastion.core.errors import BastionError
    from bastion.stores.pgvector import store_url

    rep: dict[str, Any] = {"reachable": False, "where": None}
    problems: list[str] = []
    notes: list[str] = []
    try:
        url = store_url(config)
    except BastionError as exc:
        problems.append(f"store: {exc}")
        return rep, problems, notes
    rep["where"] = where(url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=config.catalog.connect_timeout_s) as conn:
            rep["reachable"] = True
            _probe(conn, config.store, catalog_chunks, rep, problems, notes)
    except psycopg.OperationalError as exc:
        if not rep["reachable"]:
            problems.append(f"store: cannot connect to the {rep['where']} (user {url.username!r}): {_reason(exc)}; "
                            "check that the server runs and [store] url / password_env (or the catalog's, when the "
                            "store shares its database)")
        else:
            problems.append(f"store: the {rep['where']} failed while checked: {_reason(exc)}")
    except psycopg.Error as exc:
        problems.append(f"store: cannot read the {rep['where']}: {_reason(exc)}")
    return rep, problems, notes


def _probe(conn: Any, store: Any, catalog_chunks: int | None, rep: dict[str, Any], problems: list[str],
           notes: list[str]) -> None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    rep["pgvector"] = row[0] if row else None
    if row is None:
        available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
        problems.append(f"store: the {rep['where']} has no pgvector extension"
                        + (f" (version {available[0]} is available): have the database owner run CREATE EXTENSION "
                           "vector, or let the first `bastion sync` create it" if available else
                           ": install pgvector >= 0.8 on the server (managed services: enable the 'vector' extension)"))
        return
    version = tuple(int(p) for p in str(row[0]).split(".")[:2] if p.isdigit())
    if version < MIN_PGVECTOR:
        problems.append(f"store: pgvector {row[0]} is too old (the store needs >= 0.8 for iterative index scans): "
                        "ALTER EXTENSION vector UPDATE")
    tables = dict(conn.execute("SELECT t, to_regclass(t) IS NOT NULL FROM unnest(%s::text[]) AS t",
                               ([META, CHUNKS, TERMS, STATS],)).fetchall())
    rep["tables"] = tables
    if not all(tables.values()):
        missing = ", ".join(t for t, present in tables.items() if not present)
        if catalog_chunks:
            problems.append(f"store: the tables {missing} are missing while the catalog says {catalog_chunks} "
                            "chunks are indexed: run `bastion rebuild` to index every source again")
        else:
            notes.append(f"store: no tables yet ({missing}): the first `bastion sync` creates them")
        return
    rep["embedder"] = dict(conn.execute(f"SELECT key, value FROM {META}").fetchall())
    rows = int(conn.execute(f"SELECT count(*) FROM {CHUNKS}").fetchone()[0])
    term_rows = int(conn.execute(f"SELECT count(*) FROM {TERMS}").fetchone()[0])
    rep.update(chunk_rows=rows, term_rows=term_rows, catalog_chunks=catalog_chunks)
    if catalog_chunks is not None and rows != catalog_chunks:
        problems.append(f"store: {rows} chunk rows in {CHUNKS}, but the catalog's indexed documents have "
                        f"{catalog_chunks} chunks: run `bastion rebuild` (or restore the database and the catalog "
                        "from the same backup)")
    if term_rows != rows:
        problems.append(f"store: {term_rows} rows in {TERMS} for {rows} chunks: keyword search misses or invents "
                        "chunks; run `bastion rebuild`")
    _check_hnsw(conn, store, rows, rep, problems, notes)
    _check_stats(conn, term_rows, rep, problems)
    _check_copies(conn, store, rep, problems, notes)


def _check_hnsw(conn: Any, store: Any, rows: int, rep: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    found = conn.execute(_HNSW_SQL, (HNSW_INDEX,)).fetchone()
    if found is None:
        rep["hnsw"] = "absent"
        if rows >= store.ann_min_rows:
            problems.append(f"store: no HNSW index ({HNSW_INDEX}) on {rows} chunks (it is built from "
                            f"store.ann_min_rows = {store.ann_min_rows}): dense search scans every row; the next "
                            f"`bastion sync` that writes or deletes chunks builds it{REBUILD}")
        else:
            notes.append(f"store: no HNSW index yet ({rows} chunks, built from store.ann_min_rows = "
                         f"{store.ann_min_rows}): dense search is exact until then")
        return
    valid, ready, method = found
    if method != "hnsw":
        rep["hnsw"] = f"not hnsw ({method})"
        problems.append(f"store: the index {HNSW_INDEX} is a {method} index, not HNSW: run DROP INDEX {HNSW_INDEX}; "
                        f"the next `bastion sync` that writes or deletes chunks builds the HNSW index{REBUILD}")
    elif not (valid and ready):
        rep["hnsw"] = "invalid"
        problems.append(f"store: the HNSW index {HNSW_INDEX} is INVALID (its build was interrupted): searches "
                        "cannot use it and scan every row; the next `bastion sync` that writes or deletes chunks "
                        f"drops it and builds it again{REBUILD}")
    else:
        rep["hnsw"] = "valid"


def _check_stats(conn: Any, term_rows: int, rep: dict[str, Any], problems: list[str]) -> None:
    row = conn.execute(f"SELECT df, total FROM {STATS} WHERE term = ''").fetchone()
    rep["term_stats"] = None if row is None else {"chunks": int(row[0]), "terms": int(row[1])}
    fix = (f"run DELETE FROM {STATS}; the next command that opens the store (`bastion sync`, `bastion serve`) "
           f"recomputes it from {TERMS}")
    if row is None:
        problems.append(f"store: the whole-table term statistics ({STATS}) are missing, so keyword ranking for "
                        f"principals who read many chunks has no document frequencies: {fix}")
    elif int(row[0]) != term_rows:
        problems.append(f"store: the whole-table term statistics count {int(row[0])} chunks, {TERMS} holds "
                        f"{term_rows}: keyword scores are off; {fix}")


def _check_copies(conn: Any, store: Any, rep: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LABELS,)).fetchone()[0]:
        rep["label_vectors"] = None
        if store.label_vectors:
            notes.append("store: [store] label_vectors is on but the label copies are not made yet: the next command "
                         "that opens the store (`bastion sync`, `bastion serve`) makes them once no sync is writing")
        return
    copies = int(conn.execute(f"SELECT count(*) FROM {LABELS}").fetchone()[0])
    labels = int(conn.execute(f"SELECT coalesce(sum(cardinality(acl)), 0) FROM {CHUNKS}").fetchone()[0])
    rep["label_vectors"] = {"copies": copies, "chunk_labels": labels}
    if copies != labels:
        problems.append(f"store: {copies} label vector copies in {LABELS} for {labels} chunk labels: the exact dense "
                        f"ranking from them misses or invents chunks; run DROP TABLE {LABELS}; DELETE FROM {META} WHERE "
                        "key = 'label_vectors'; the next command that opens the store with [store] label_vectors = true "
                        "makes them again")
    elif not store.label_vectors:
        notes.append(f"store: {LABELS} ({copies} copies) is kept by every write though [store] label_vectors is off: "
                     f"DROP TABLE {LABELS} to save its space and write time")


def store_row(rep: dict[str, Any]) -> str:
    """The store's line in doctor's table."""
    if not rep["reachable"]:
        return f"pgvector: not reachable ({rep['where'] or 'no database configured'})"
    text = f"pgvector {rep.get('pgvector') or 'missing'} in the {rep['where']}"
    if "chunk_rows" in rep:
        text += f"; {rep['chunk_rows']} chunk rows; HNSW index {rep['hnsw']}"
        text += "; term statistics " + ("present" if rep.get("term_stats") else "missing")
        if rep.get("label_vectors"):
            text += f"; {rep['label_vectors']['copies']} label vector copies"
    return text
