"""Search latency and recall of Bastion's LanceStore at 10k / 100k / 1M chunks, under ACL filters.

What is measured (one run, same machine, so ratios between cells are meaningful)
---------------------------------------------------------------------------------
For each corpus size and each ACL selectivity (the share of chunks the principal may read):

* **dense**  -- ``LanceStore.search_dense(vector, labels, k=10)``: latency p50/p95 and
  recall@10 against the *exact* filtered top-10, computed here by numpy brute force
  (cosine) over only the authorised chunks.
* **dense (retriever)** -- ``HybridRetriever.search(mode="dense", k=10)``: the product's dense-only path
  (ranks k ids, then reads their rows): latency p50/p95.
* **bm25**   -- ``HybridRetriever.search(mode="bm25", k=10)``: latency p50/p95.
* **hybrid** -- ``HybridRetriever.search(mode="hybrid", k=10)`` with ``candidates=50``;
  ``embed_query`` is a lookup of a precomputed query vector, so no model time is included.
* **relevant recall** -- the same, counting only exact top-10 neighbours with cosine >= 0.3, i.e. chunks
  of the query's own topic (other topics score <= ~0.25). When the principal may read few chunks of the
  query's topic, the rest of the exact top-10 are noise-level chunks of unrelated topics whose order PQ
  cannot resolve; strict recall@10 then counts them, relevant recall does not. "(n)" is the number of
  queries that had any relevant neighbour.
* **order**  -- each mode makes its own pass over the queries (until v11 the modes ran back to back
  for each query, so the later ones found that query's pages warm).
* **short**  -- how many queries returned fewer than k=10 hits although at least 10
  authorised (and, for BM25, term-matching) chunks exist. Must be 0.
* **path**   -- whether the store took its exact path (``count_rows(filter) <=
  exact_threshold``: the authorised vectors held in memory, ``bastion.stores.exact``) or its
  vector index path (IVF_SQ by default, ``--vector-index ivf_pq``; nprobes/refine_factor, with a wider
  probe and then a LanceDB scan when the probe returns fewer than k rows). With ``--diag-queries`` the
  LanceDB scan (``bypass_vector_index``) and the raw index probe (no fallback) are also measured for
  every cell.
* **while a sync writes** -- query p50/p95 idle (``--idle-rounds``), then while a background writer (a
  separate process with its own ``LanceStore`` on the same directory, or ``--writer thread``) commits
  new chunks with ``replace_documents`` and calls ``optimize()`` every 2,048 rows, at nice 10 -- as the
  server runs a sync (``index.optimize_every_chunks``, ``server.sync_nice``; ``--optimize-every`` /
  ``--writer-nice`` change them) -- then idle again. Two writers:

  - the stress writer (default): 500 synthetic chunks (50 new doc ids) every ~0.5 s, about sixty
    times the commit rate of a real sync on this machine;
  - ``--writer-embed``: a real sync's pace and load: each batch of 256 chunks (``ingest.batch_chunks``)
    is embedded with the bundled default embedder on all cores but one (``--writer-threads``; the
    server's ``server.sync_threads`` default) before it is written.

  Reported as busy p95 / idle p95. On a noisy VM the machine's own speed drifts between an idle
  phase and the sync after it as much as the sync moves the figures (a run of 2026-12-01: the whole
  table's idle p95 47 ms, 30 ms while syncing), so by default (``--interleave 5``) the process writer
  is stopped (SIGSTOP) and continued in turns of 5 s while it syncs, and the idle p95 of the ratio
  is that of the queries of its stopped turns; the idle phase before it is reported beside it.

Latencies are wall-clock per call (``time.perf_counter``), warm-up queries excluded; every
cell uses the same ``--queries`` query set, and dense/bm25/hybrid are interleaved per query so
background noise hits all three alike.

The synthetic corpus
--------------------
* 1000 topics; each topic has 8 sub-topics. A chunk vector (384 dims) is
  ``normalize(topic + 0.6*subtopic + 0.8*noise)`` with unit-norm topic, subtopic and noise
  directions, so chunks form clusters (sub-topics) within clusters (topics): same sub-topic
  cosine ~0.68, same topic ~0.5, different topics ~0. A query is a fresh point drawn the same
  way from a random topic/sub-topic, so its exact top-10 are near-ties inside one sub-topic
  (hard for PQ, which is the point).
* Text: 30 words drawn Zipf-wise from the topic's own 40-word vocabulary (vocabularies
  overlap between topics, drawn from 20,000 pseudo-words) + 15 words drawn Zipf-wise from
  300 common words. Words are chosen so the analyser leaves them unchanged (``terms == text``).
  A query's text is 3 Zipf draws from its topic's vocabulary + 1 common word.
* ACL labels: every chunk carries ``group:all`` (100 %); a uniformly random 50 % also
  ``group:g50``, 10 % ``group:g10``, 1 % ``group:g1`` (the hard case: SCATTERED over all
  topics), and the chunks of 1 % of the topics ``group:g1c`` (1 %, CLUSTERED: most queries
  come from topics the principal cannot read, so its nearest authorised chunks are far).
  The principal is ``Principal("bench", {group})``, whose labels are
  ``{user:bench, everyone, group:<g>}`` exactly as in production (no chunk carries
  ``everyone`` or ``user:bench``, so the filter admits exactly the group's share).

Loading and indexing: rows are bulk-loaded with ``store.lancedb().table.add`` in batches of 100,000
(pre-built Arrow tables, not ``replace_documents``: its merge_insert is the sync path and is
measured by the writer instead), then ``store.optimize()`` builds FTS, LABEL_LIST, BTREE and,
when rows >= ``ann_min_rows`` (100,000), the vector index with ``sqrt(rows)`` partitions (1000 at
1M): IVF_SQ by default, or IVF_PQ with dim/8 = 48 sub-vectors (``--vector-index``) -- the store's
defaults. With ``--reuse`` a kept store whose vector index is of the other kind has it rebuilt (timed).
The store's search settings (exact_threshold, nprobes, refine_factor) are its defaults unless given
on the command line.
The "search paths forced" table (``--diag-queries``) runs the exact path and the index probe alone at
several nprobes for every cell, whatever the store would pick, to show where the threshold belongs.

    python bench/search_scale.py --sizes 10000,100000 --json bench/results/scale-small.json
    nohup python bench/search_scale.py --sizes 1000000 --json bench/results/scale-1m.json > bench/results/scale-1m.log 2>&1 &

Goals (checked at every size, stated for 1M): dense p95 <= 20 ms, hybrid p95 <= 40 ms,
recall@10 >= 0.95 at every selectivity, p95 while a sync writes <= 2x idle.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import (
    ACLS,
    CANDIDATES,
    DIM,
    LOAD_BATCH,
    Corpus,
    K,
    TopicModel,
    exact_topk,
    lower_priority,
    make_queries,
    real_embedder,
    sync_batch,
)
from bastion.core.threads import limit_math_threads
from bastion.core.types import Principal
from bastion.retrieval.hybrid import HybridRetriever
from bastion.stores import lance_schema
from bastion.stores.lance import LanceStore, acl_filter

RELEVANT_COS = 0.3  # same-topic neighbours score >= ~0.4, other topics <= ~0.25 (384 dims): see the docstring
GOAL_DENSE_P95, GOAL_HYBRID_P95, GOAL_RECALL, GOAL_SYNC_RATIO = 20.0, 40.0, 0.95, 2.0
RESULTS = Path(__file__).resolve().parent / "results"


def pct(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    p50, p95 = np.percentile(np.asarray(xs) * 1000.0, [50, 95])
    return float(p50), float(p95)


def _cid(row: dict) -> int:
    return int(row["chunk_id"][1:]) if row["chunk_id"].startswith("c") else -1


# -- the background writer -----------------------------------------------------------------


def _write_loop(store: LanceStore, model: TopicModel, seed: int, period: float, size: int, seconds: float,
                stop, started, times: list, optimize_every: int = 0, embed=None) -> None:
    """replace_documents(``size`` / 10 new doc ids, ``size`` chunks) every ``period`` s for ``seconds`` s (or
    until ``stop``); with ``optimize_every``, optimize() after that many rows, as SyncPipeline does
    (index.optimize_every_chunks); with ``embed``, each batch's texts are embedded first and those vectors
    written, as SyncPipeline does."""
    rng = np.random.default_rng(seed)
    b, deadline, unindexed = 0, None, 0
    while not stop.is_set() and (deadline is None or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        deadline = deadline or t0 + seconds
        doc_ids, chunks = sync_batch(model, rng, b, size)
        if embed is not None:
            vectors = embed([c.text for c in chunks])
            chunks = [replace(c, vector=np.asarray(v, dtype=np.float32)) for c, v in zip(chunks, vectors)]
        store.replace_documents(doc_ids, chunks)
        unindexed += len(chunks)
        if optimize_every and unindexed >= optimize_every:
            store.optimize()
            unindexed = 0
        times.append(time.perf_counter() - t0)
        started.set()
        b += 1
        stop.wait(max(0.0, period - (time.perf_counter() - t0)))


def _writer_process(path: str, seed: int, period: float, size: int, seconds: float, stop, started, out,
                    optimize_every: int = 0, nice: int = 0, embed: int = 0, vector_index: str = "IVF_SQ") -> None:
    lower_priority(nice)
    store = LanceStore(path, embedder_id="bench-synthetic", dimension=DIM, vector_index=vector_index)
    times: list[float] = []
    _write_loop(store, TopicModel(seed), seed + 99, period, size, seconds, stop, started, times, optimize_every,
                real_embedder(embed) if embed else None)
    out.put(times)


class Writer:
    """A sync running beside the queries: a thread with its own LanceStore, or a separate process."""

    def __init__(self, kind: str, path: Path, model: TopicModel, seed: int, period: float, size: int, seconds: float,
                 optimize_every: int = 0, nice: int = 0, embed: int = 0, vector_index: str = "IVF_SQ"):
        """``embed``: embed every batch first, with that many embedder threads (0: write synthetic vectors);
        ``vector_index``: the readers' kind (the writer's optimize would rebuild another)."""
        self.kind, self.times = kind, []
        if kind == "thread":
            self.stop, self.started = threading.Event(), threading.Event()
            store = LanceStore(path, embedder_id="bench-synthetic", dimension=DIM,  # own connection, like a sync would
                               vector_index=vector_index)
            self.worker = threading.Thread(target=_write_loop, daemon=True,
                                           args=(store, model, seed + 99, period, size, seconds, self.stop,
                                                 self.started, self.times, optimize_every,
                                                 real_embedder(embed) if embed else None))
        else:
            ctx = mp.get_context("spawn")
            self.stop, self.started, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
            self.worker = ctx.Process(target=_writer_process, daemon=True,
                                      args=(str(path), seed, period, size, seconds, self.stop, self.started, self.out,
                                            optimize_every, nice, embed, vector_index))

    def __enter__(self):
        self.worker.start()
        if not self.started.wait(300):
            raise RuntimeError("the writer never committed a batch")
        return self

    def writing(self) -> bool:
        return self.worker.is_alive() and not (self.kind == "process" and not self.out.empty())

    def __exit__(self, *exc):
        self.stop.set()
        if self.kind == "process":
            self.times = self.out.get(timeout=600)
        self.worker.join(600)


# -- one size ------------------------------------------------------------------------------
def run_size(n: int, args, model: TopicModel, root: Path) -> dict:
    res: dict = {"size": n}
    t0 = time.perf_counter()
    corpus = Corpus(model, n, args.seed)
    nq = args.queries + args.warmup
    qvecs, qtexts, qwords = make_queries(model, nq, args.seed + n)
    res["generate_s"] = time.perf_counter() - t0
    print(f"\n## {n:,} chunks: generated in {res['generate_s']:.1f}s", flush=True)

    path = root / f"n{n}"
    store_kw = dict(embedder_id="bench-synthetic", dimension=DIM)
    store_kw |= {k: getattr(args, k) for k in ("exact_threshold", "nprobes", "refine_factor", "ann_min_rows", "vector_index")
                 if getattr(args, k) is not None}  # else LanceStore's defaults
    reuse = args.reuse and path.exists()
    if reuse:
        store = LanceStore(path, **store_kw)
        if store.count() > n:  # rows an earlier run's writer added: drop them, so the exact truth holds again
            store.lancedb().table.delete("doc_id LIKE 'sync-%'")
        if store.count() != n:
            raise SystemExit(f"--reuse: {path} holds {store.count()} rows, expected {n}")
        res["load_s"] = res["optimize_s"] = 0.0
        print(f"reusing {path}", flush=True)
        if store.vector_index_built and store.vector_index_built != store.vector_index:
            t0 = time.perf_counter()
            store.build_vector_index()
            res["vector_index_rebuild_s"] = time.perf_counter() - t0
            print(f"vector index rebuilt as {store.vector_index} in {res['vector_index_rebuild_s']:.1f}s", flush=True)
    else:
        if path.exists():
            shutil.rmtree(path)
        store = LanceStore(path, **store_kw)
        t0 = time.perf_counter()
        for s in range(0, n, LOAD_BATCH):
            store.lancedb().table.add(corpus.arrow_batch(model, s, min(n, s + LOAD_BATCH)))
        res["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        res["optimize_s"] = time.perf_counter() - t0
        print(f"loaded via LanceDB's table.add in {res['load_s']:.1f}s; optimize() in {res['optimize_s']:.1f}s", flush=True)
    res["indices"] = sorted(f"{i.columns[0]}:{i.index_type}" for i in store.lancedb().table.list_indices())
    if not args.no_warm:  # as `bastion serve` does at start (search.warm_check_s)
        t0 = time.perf_counter()
        store.warm()
        res["warm_s"] = time.perf_counter() - t0
        print(f"indexes loaded into memory in {res['warm_s']:.2f}s (LanceStore.warm, as bastion serve does)", flush=True)
    print("indices:", ", ".join(res["indices"]), flush=True)

    t0 = time.perf_counter()
    truth = exact_topk(corpus, qvecs[args.warmup:])
    res["truth_s"] = time.perf_counter() - t0
    top = truth["all"][0]
    rand = float(np.mean(qvecs[args.warmup:] @ corpus.vectors[np.random.default_rng(1).integers(0, n, 1000)].T))
    res["similarity"] = {"top1": float(top[:, 0].mean()), "top10": float(top[:, -1].mean()), "random": rand}
    print(f"exact truth in {res['truth_s']:.1f}s; mean cosine top1 {top[:, 0].mean():.3f}, "
          f"top10 {top[:, -1].mean():.3f}, random chunk {rand:.3f}", flush=True)

    current = {"v": None}
    retriever = HybridRetriever(store, lambda q: current["v"], candidates=CANDIDATES)
    res["cells"] = []
    for name, group in ACLS.items():
        principal = Principal("bench", frozenset({group}))
        labels = principal.labels()
        where = acl_filter(labels)
        members = corpus.members[group]
        authorised = int(members.sum())
        t0 = time.perf_counter()
        counted = store.lancedb().table.count_rows(where)
        count_ms = (time.perf_counter() - t0) * 1000
        path_name = ("exact (memory)" if store.exact_path(labels) else
                     store.vector_index_built.lower() if store.vector_index_built else "exact (scan)")
        lat = {"dense": [], "dense_r": [], "bm25": [], "hybrid": []}
        recall, relevant, short = [], [], {"dense": 0, "dense_r": 0, "bm25": 0, "hybrid": 0}
        # One pass over the queries per mode, so no mode runs on pages the same query just read in another
        # mode (interleaving them per query warmed the later modes' IVF partitions and rows).
        calls = {"dense": lambda i: store.search_dense(qvecs[i], labels, K),
                 "dense_r": lambda i: retriever.search(qtexts[i], principal, K, mode="dense"),
                 "bm25": lambda i: retriever.search(qtexts[i], principal, K, mode="bm25"),
                 "hybrid": lambda i: retriever.search(qtexts[i], principal, K, mode="hybrid")}
        out: dict[str, list] = {}
        for mode, call in calls.items():
            out[mode] = []
            for i in range(nq):
                current["v"] = qvecs[i]
                t0 = time.perf_counter()
                got_hits = call(i)
                if i >= args.warmup:
                    lat[mode].append(time.perf_counter() - t0)
                    out[mode].append(got_hits)
        for qi in range(nq - args.warmup):
            i = qi + args.warmup
            dense, dense_r, bm25, hybrid = (out[m][qi] for m in ("dense", "dense_r", "bm25", "hybrid"))
            want = set(truth[group][1][qi].tolist()) - {-1}
            got = [_cid(h.row) for h in dense]
            recall.append(len(want & set(got)) / max(1, len(want)))
            near = {int(c) for c, sim in zip(truth[group][1][qi], truth[group][0][qi]) if sim >= RELEVANT_COS}
            if near:
                relevant.append(len(near & set(got)) / len(near))
            if any(not members[c] for c in got) or any(not members[int(h.chunk_id[1:])] for h in hybrid + bm25 + dense_r):
                raise SystemExit(f"ACL LEAK in cell {name}")  # never expected: the filter is inside the store
            short["dense"] += len(dense) < K <= authorised
            short["dense_r"] += len(dense_r) < K <= authorised
            short["hybrid"] += len(hybrid) < K <= authorised
            if len(bm25) < K:  # short only if >= K authorised chunks contain a query term
                matching = int((np.isin(corpus.words, qwords[i]).any(1) & members).sum())
                short["bm25"] += matching >= K
        cell = {"acl": name, "group": group, "authorised": authorised, "count_rows": counted,
                "count_rows_ms": count_ms, "path": path_name,
                "recall": float(np.mean(recall)), "recall_min": float(np.min(recall)),
                "recall_relevant": float(np.mean(relevant)) if relevant else float("nan"),
                "queries_with_relevant": len(relevant), "short": short}
        for mode, xs in lat.items():
            cell[f"{mode}_p50"], cell[f"{mode}_p95"] = pct(xs)
        if store.vector_index_built and args.diag_queries:
            cell["diag"] = diagnose(store, where, truth[group], qvecs, args, authorised)
        res["cells"].append(cell)
        print(f"{name:>13}: {authorised:>8,} rows, {cell['path']:>6}, dense {cell['dense_p50']:.1f}/{cell['dense_p95']:.1f} ms, "
              f"dense (retriever) {cell['dense_r_p50']:.1f}/{cell['dense_r_p95']:.1f}, "
              f"bm25 {cell['bm25_p50']:.1f}/{cell['bm25_p95']:.1f}, hybrid {cell['hybrid_p50']:.1f}/{cell['hybrid_p95']:.1f}, "
              f"recall {cell['recall']:.3f} (relevant {cell['recall_relevant']:.3f} over {len(relevant)} queries), short {short}" + "".join(
                  f"\n      {v}: recall {d['recall']:.3f}, short {d['short']}, {d['p50']:.1f}/{d['p95']:.1f} ms"
                  for v, d in cell.get("diag", {}).items()),
              flush=True)

    if not args.no_sync:
        res["sync"] = measure_sync(store, retriever, current, path, model, args, qvecs, qtexts)
    del corpus
    return res


def diagnose(store: LanceStore, where: str, truth, qvecs: np.ndarray, args, authorised: int) -> dict:
    """The two search paths forced, whatever the store would choose: exact (bypass_vector_index) and the vector
    index probe alone (no exact fallback) at several nprobes, on the first --diag-queries queries."""
    def base(v):
        return (store.lancedb().table.search(v, vector_column_name="vector").distance_type("cosine")
                .where(where, prefilter=True).limit(K).select(lance_schema.COLUMNS + ["_distance"]))

    variants = {}
    if authorised <= args.diag_exact_max:
        variants["exact"] = lambda v: base(v).bypass_vector_index()
    for p in (int(x) for x in args.diag_nprobes.split(",") if x):
        variants[f"{store.vector_index_built.lower()} nprobes={p}"] = lambda v, p=p: base(v).nprobes(p).refine_factor(store.refine)
    t0 = time.perf_counter()
    for _ in range(20):
        store.lancedb().table.count_rows(where)
    out = {"count_rows": {"recall": float("nan"), "short": 0, "p50": (time.perf_counter() - t0) / 20 * 1000,
                          "p95": float("nan")}}
    for name, build in variants.items():
        for i in range(min(5, args.warmup)):
            build(qvecs[i]).to_list()
        lat, rec, short = [], [], 0
        for qi in range(min(args.diag_queries, args.queries)):
            i = qi + args.warmup
            t0 = time.perf_counter()
            rows = build(qvecs[i]).to_list()
            lat.append(time.perf_counter() - t0)
            short += len(rows) < K <= authorised
            want = set(truth[1][qi].tolist()) - {-1}
            rec.append(len(want & {_cid(r) for r in rows}) / max(1, len(want)))
        p50, p95 = pct(lat)
        out[name] = {"recall": float(np.mean(rec)), "short": short, "p50": p50, "p95": p95}
    return out


def measure_sync(store, retriever, current, path, model, args, qvecs, qtexts) -> dict:
    """Query p50/p95 idle, while a writer syncs for --sync-seconds, after it (not optimized), after optimize()."""
    groups = [("100%", "all"), ("1% scattered", "g1")]
    principals = {name: Principal("bench", frozenset({g})) for name, g in groups}

    def phase(keep_going=None, rounds_wanted: int | None = None, state=None) -> tuple[dict, int]:
        """Query rounds until ``keep_going()`` is false (or ``rounds_wanted``); with ``state`` (a function
        naming the writer's state now: "busy" or "idle"), latencies are kept apart by that state."""
        lat: dict = {}
        rounds, i = 0, args.warmup
        while (rounds < (rounds_wanted or args.queries)) if keep_going is None else keep_going():
            current["v"] = qvecs[i]
            tag = state() if state else None
            for name, p in principals.items():
                t0 = time.perf_counter()
                store.search_dense(qvecs[i], p.labels(), K)
                t1 = time.perf_counter()
                retriever.search(qtexts[i], p, K, mode="hybrid")
                t2 = time.perf_counter()
                lat.setdefault((name, "dense", tag), []).append(t1 - t0)
                lat.setdefault((name, "hybrid", tag), []).append(t2 - t1)
            rounds += 1
            i = args.warmup + (i + 1 - args.warmup) % (len(qvecs) - args.warmup)
        if state is None:
            return {k[:2]: pct(v) for k, v in lat.items()}, rounds
        return {t: {k[:2]: pct(v) for k, v in lat.items() if k[2] == t} for t in ("busy", "idle")}, rounds

    before = store.count()
    idle, _ = phase(rounds_wanted=args.idle_rounds)  # the baseline of the ratio: enough rounds for a steady p95
    before_idle, interleaved = idle, bool(args.interleave and args.writer == "process")
    with Writer(args.writer, path, model, args.seed, args.sync_period, args.sync_batch, args.sync_seconds,
                args.optimize_every, args.writer_nice if args.writer == "process" else 0,
                args.writer_threads if args.writer_embed else 0, store.vector_index) as w:
        t0 = time.perf_counter()
        if interleaved:  # the writer stopped and continued in turns: idle and busy share the VM's drift
            clock = {"state": "busy", "since": time.perf_counter()}

            def state() -> str:
                if time.perf_counter() - clock["since"] >= args.interleave:
                    clock["state"] = "idle" if clock["state"] == "busy" else "busy"
                    os.kill(w.worker.pid, signal.SIGSTOP if clock["state"] == "idle" else signal.SIGCONT)
                    time.sleep(0.2)  # off (or back on) its core
                    clock["since"] = time.perf_counter()
                return clock["state"]

            try:
                by_state, busy_rounds = phase(w.writing, state=state)
            finally:
                os.kill(w.worker.pid, signal.SIGCONT)
            busy, idle = by_state["busy"], by_state["idle"]
        else:
            busy, busy_rounds = phase(w.writing)
        busy_s = time.perf_counter() - t0
    after, _ = phase()
    written = store.count() - before
    t0 = time.perf_counter()
    store.optimize()  # what the sync pipeline does at the end of a sync
    optimize_s = time.perf_counter() - t0
    optimized, _ = phase()
    if args.keep:  # leave the store as loaded, for --reuse
        store.lancedb().table.delete("doc_id LIKE 'sync-%'")
        store.optimize()
    rows = []
    for (name, mode), (p50, p95) in idle.items():
        b50, b95 = busy[(name, mode)]
        rows.append({"acl": name, "mode": mode, "idle_p50": p50, "idle_p95": p95, "busy_p50": b50, "busy_p95": b95,
                     "before_p95": before_idle[(name, mode)][1],
                     "after_p95": after[(name, mode)][1], "optimized_p95": optimized[(name, mode)][1],
                     "ratio_p95": b95 / p95})
    wt = w.times
    out = {"writer": args.writer, "embeds": args.writer_embed, "interleave_s": args.interleave if interleaved else 0, "writer_threads": args.writer_threads, "batch": args.sync_batch, "period_s": args.sync_period, "busy_s": busy_s,
           "optimize_every": args.optimize_every,
           "busy_queries": busy_rounds, "batches": len(wt), "rows_before": before, "rows_written": written,
           "write_p50_s": float(np.median(wt)), "write_max_s": float(np.max(wt)), "optimize_after_s": optimize_s,
           "rows": rows}
    print(f"sync ({args.writer}{f', embedding on {args.writer_threads} thread(s)' if args.writer_embed else ''}): {len(wt)} batches of {args.sync_batch} ({written:,} rows onto {before:,}) in "
          f"{busy_s:.1f}s, {busy_rounds} query rounds meanwhile; batch p50 {out['write_p50_s']:.2f}s "
          f"max {out['write_max_s']:.2f}s; optimize() after {optimize_s:.1f}s", flush=True)
    for r in rows:
        print(f"  {r['acl']:>13} {r['mode']:>6}: idle p95 {r['idle_p95']:.1f} ms{' (writer stopped in turns)' if interleaved else ''}, "
              f"busy p95 {r['busy_p95']:.1f} ms ({r['ratio_p95']:.2f}x); before the writer {r['before_p95']:.1f}, "
              f"after {r['after_p95']:.1f}, after optimize() {r['optimized_p95']:.1f}", flush=True)
    return out


# -- report --------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def markdown(results: list[dict]) -> str:
    lines = ["| chunks | ACL | authorised | path | dense p50/p95 ms | dense (retriever) p50/p95 ms | bm25 p50/p95 ms "
             "| hybrid p50/p95 ms | recall@10 (min) | relevant recall (queries) | short d/b/h | dense p95<=20 "
             "| hybrid p95<=40 | recall>=0.95 |",
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in results:
        for c in r["cells"]:
            s = c["short"]
            lines.append(
                f"| {r['size']:,} | {c['acl']} | {c['authorised']:,} | {c['path']} "
                f"| {c['dense_p50']:.1f} / {c['dense_p95']:.1f} | {c['dense_r_p50']:.1f} / {c['dense_r_p95']:.1f} "
                f"| {c['bm25_p50']:.1f} / {c['bm25_p95']:.1f} "
                f"| {c['hybrid_p50']:.1f} / {c['hybrid_p95']:.1f} | {c['recall']:.3f} ({c['recall_min']:.1f}) "
                f"| {c['recall_relevant']:.3f} ({c['queries_with_relevant']}) "
                f"| {s['dense']}/{s['bm25']}/{s['hybrid']} | {verdict(c['dense_p95'] <= GOAL_DENSE_P95)} "
                f"| {verdict(c['hybrid_p95'] <= GOAL_HYBRID_P95)} | {verdict(c['recall'] >= GOAL_RECALL)} |")
    diag = [(r["size"], c) for r in results for c in r["cells"] if "diag" in c]
    if diag:
        lines += ["", "Search paths forced (diagnosis; the store picks one of them per query):", "",
                  "| chunks | ACL | authorised | variant | recall@10 | short | p50 / p95 ms |", "|---:|---|---:|---|---:|---:|---:|"]
        for n, c in diag:
            for v, d in c["diag"].items():
                if v == "count_rows":
                    lines.append(f"| {n:,} | {c['acl']} | {c['authorised']:,} | count_rows(filter) (mean) | | | {d['p50']:.1f} |")
                else:
                    lines.append(f"| {n:,} | {c['acl']} | {c['authorised']:,} | {v} | {d['recall']:.3f} | {d['short']} "
                                 f"| {d['p50']:.1f} / {d['p95']:.1f} |")
    syncs = [r for r in results if "sync" in r]
    if syncs:
        lines += ["", "| chunks | ACL | mode | idle p50/p95 ms | while syncing p50/p95 ms | after (not optimized) p95 "
                  "| after optimize() p95 | ratio p95 | <=2x |",
                  "|---:|---|---|---:|---:|---:|---:|---:|---|"]
        for r in syncs:
            for x in r["sync"]["rows"]:
                lines.append(f"| {r['size']:,} | {x['acl']} | {x['mode']} | {x['idle_p50']:.1f} / {x['idle_p95']:.1f} "
                             f"| {x['busy_p50']:.1f} / {x['busy_p95']:.1f} | {x['after_p95']:.1f} | {x['optimized_p95']:.1f} | {x['ratio_p95']:.2f} "
                             f"| {verdict(x['ratio_p95'] <= GOAL_SYNC_RATIO)} |")
        lines += ["", "| chunks | writer | batches x rows (onto rows) | query rounds while writing | batch p50 / max s "
                  "| optimize() after s |", "|---:|---|---:|---:|---:|---:|"]
        for r in syncs:
            s = r["sync"]
            lines.append(f"| {r['size']:,} | {s['writer']}{' + embedding (%s threads)' % s.get('writer_threads') if s.get('embeds') else ''} | {s['batches']} x {s['batch']} ({s['rows_before']:,}) | {s['busy_queries']} "
                         f"| {s['write_p50_s']:.2f} / {s['write_max_s']:.2f} "
                         f"| {s['optimize_after_s']:.1f} |")
    lines += ["", "| chunks | generate s | load s | optimize() s | indices |", "|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['size']:,} | {r['generate_s']:.1f} | {r['load_s']:.1f} | {r['optimize_s']:.1f} | {', '.join(r['indices'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated chunk counts")
    ap.add_argument("--queries", type=int, default=200, help="measured queries per cell")
    ap.add_argument("--warmup", type=int, default=20, help="warm-up queries per cell (not measured)")
    ap.add_argument("--path", type=Path, help="data directory (default: a temp dir under bench/results/)")
    ap.add_argument("--keep", action="store_true", help="keep the stores at the end")
    ap.add_argument("--reuse", action="store_true", help="reuse a kept store of the right size under --path")
    ap.add_argument("--json", type=Path, help="write all figures here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--exact-threshold", type=int, help="LanceStore exact_threshold (default: the store's)")
    ap.add_argument("--nprobes", type=int, help="LanceStore nprobes (default: the store's)")
    ap.add_argument("--refine-factor", type=int, help="LanceStore refine_factor (default: the store's for its index kind)")
    ap.add_argument("--vector-index", choices=["ivf_sq", "ivf_pq"], help="LanceStore vector_index (default: the store's)")
    ap.add_argument("--ann-min-rows", type=int, help="LanceStore ann_min_rows (default: the store's)")
    ap.add_argument("--diag-queries", type=int, default=50, help="queries per forced-path variant (0: none)")
    ap.add_argument("--diag-nprobes", default="20,50,100", help="nprobes values of the forced vector index variants")
    ap.add_argument("--diag-exact-max", type=int, default=100_000,
                    help="force the exact path only where at most this many rows are authorised")
    ap.add_argument("--writer", choices=("thread", "process"), default="process",
                    help="the sync runs in its own process (like `bastion sync` beside a server) or in a thread")
    ap.add_argument("--sync-seconds", type=float, help="how long the writer writes (default 20)")
    ap.add_argument("--sync-batch", type=int, help="chunks per replace_documents while syncing (default 500)")
    ap.add_argument("--sync-period", type=float, help="seconds between writer batches (default 0.5)")
    ap.add_argument("--interleave", type=float, default=5.0,
                    help="while a process writer runs, stop it (SIGSTOP) and continue it in turns of this many "
                         "seconds, and compare the queries of its busy turns with those of its stopped ones, so "
                         "both share the VM's drift (0: compare with the idle phase before the writer starts)")
    ap.add_argument("--idle-rounds", type=int, default=300, help="query rounds of the idle phase before the writer starts")
    ap.add_argument("--no-warm", action="store_true",
                    help="do not load the indexes into memory before measuring (bastion serve does; a CLI search does not)")
    ap.add_argument("--no-sync", action="store_true", help="skip the while-a-sync-writes measurement")
    ap.add_argument("--optimize-every", type=int, default=2048,
                    help="the writer optimizes after this many rows, like index.optimize_every_chunks (its default; 0: never)")
    ap.add_argument("--writer-nice", type=int, default=10,
                    help="nice value of the writer process, like server.sync_nice (its default; 0: same priority)")
    ap.add_argument("--writer-embed", action="store_true",
                    help="the writer embeds each batch with the bundled default embedder before writing it, as "
                         "`bastion sync` does (a real sync's pace and CPU load); with it, --sync-batch defaults to "
                         "256 (ingest.batch_chunks), --sync-period to 0 and --sync-seconds to 90")
    ap.add_argument("--writer-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="embedder threads of the --writer-embed writer (default: all cores but one, as the server "
                         "runs a sync: server.sync_threads)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="threads of numpy's matrix products in the query process (default 1, as `bastion serve` "
                         "runs them: server.query_threads; 0: the library's default, all cores)")
    args = ap.parse_args()
    if args.blas_threads:
        limit_math_threads(args.blas_threads)
    for name, plain, embedding in (("sync_batch", 500, 256), ("sync_period", 0.5, 0.0), ("sync_seconds", 20.0, 90.0)):
        if getattr(args, name) is None:
            setattr(args, name, embedding if args.writer_embed else plain)
    sizes = [int(s) for s in args.sizes.split(",")]

    created = args.path is None
    RESULTS.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=RESULTS)) if created else args.path
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = TopicModel(args.seed)
    print(f"topic model in {time.perf_counter() - t0:.1f}s; data under {root}", flush=True)
    results = []
    try:
        for n in sizes:
            results.append(run_size(n, args, model, root))
            if args.json:
                args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    finally:
        if not args.keep:
            for n in sizes:
                shutil.rmtree(root / f"n{n}", ignore_errors=True)
            if created:
                shutil.rmtree(root, ignore_errors=True)
    print("\n" + markdown(results))


if __name__ == "__main__":
    main()
