"""What a sync's embedder running beside the queries does to a small group's search latency.

``search_scale.py --writer-embed`` measures idle first, then while a real sync writes: on this noisy
2-core VM the machine's own speed drifts between the two phases as much as the sync moves the
figures. Here a process runs the bundled embedder non-stop at the nice value a server gives its
syncs (``server.sync_nice``), and is stopped and continued (SIGSTOP / SIGCONT) every ``--block``
seconds, so the idle and busy samples interleave and share the drift. It writes nothing: what the
queries meet is the embedder's CPU, not commits (a real sync commits once per ~110 s batch here;
``bench/refresh_cost.py`` measures the refresh after a commit).

Per query of one principal (default the 1 % scattered group ``g1`` of the search_scale store):
the store's dense search (``search_dense``: version check, exact ranking from memory, rows),
the retriever's hybrid search (both legs and the rows), and the dense search's parts alone (the
table version; ``rank_dense`` from memory, which reads the version again; ``fetch``).
Variants, each in its own interleaved blocks, in one run: numpy's BLAS on 1 thread (as ``bastion
serve`` runs queries, ``server.query_threads``) or on all cores, and the hits' rows from the
exact path's memory (the default) or read by Lance's ``take`` (as before 2026-12-01).

    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m --keep --diag-queries 0 --no-sync   # the store
    python bench/sync_contention.py --path /tmp/s1m/n1000000 --json bench/results/contention.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from _common import CANDIDATES, DIM, K, TopicModel, lower_priority, make_queries, real_embedder
from bastion.core.types import Principal
from bastion.retrieval.hybrid import HybridRetriever
from bastion.stores.lance import LanceStore

PARTS = ("dense", "hybrid", "version", "rank", "rows")


def _embedder(nice: int, threads: int, stop, ready) -> None:
    """The bundled embedder as a sync runs it (priority and threads), embedding non-stop."""
    lower_priority(nice)
    embed = real_embedder(threads)
    texts = [f"Quarterly close {i}: the finance policy requires every report to be reviewed by two people "
             f"before it is filed, and the review to be recorded in the ledger. " * 3 for i in range(16)]
    embed(texts)
    ready.set()
    while not stop.is_set():
        embed(texts)


def _pct(values: list[float]) -> dict:
    a = np.asarray(values) * 1000
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99))}


def measure(store, retriever, current, principal, qvecs, qtexts, pid: int, pairs: int, block: float) -> dict:
    """Idle and busy blocks alternating (the embedder stopped / continued); latencies pooled per state."""
    labels = principal.labels()
    lat = {state: {p: [] for p in PARTS} for state in ("idle", "busy")}
    i = 0
    for b in range(2 * pairs):
        state = ("idle", "busy")[b % 2]
        os.kill(pid, signal.SIGCONT if state == "busy" else signal.SIGSTOP)
        time.sleep(0.3)  # the embedder back on its core (or off it)
        end = time.perf_counter() + block
        while time.perf_counter() < end:
            q = qvecs[i % len(qvecs)]
            current["v"] = q
            t0 = time.perf_counter()
            store.search_dense(q, labels, K)
            t1 = time.perf_counter()
            retriever.search(qtexts[i % len(qtexts)], principal, K, mode="hybrid")
            t2 = time.perf_counter()
            store.table_version()
            t3 = time.perf_counter()
            ranked = store.rank_dense(q, labels, K)
            t4 = time.perf_counter()
            store.fetch([(r.chunk_id, r.score) for r in ranked], labels)
            t5 = time.perf_counter()
            for p, d in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                lat[state][p].append(d)
            i += 1
    os.kill(pid, signal.SIGSTOP)
    out = {state: {p: _pct(v) for p, v in parts.items()} for state, parts in lat.items()}
    out["ratio_p95"] = {p: out["busy"][p]["p95"] / out["idle"][p]["p95"] for p in PARTS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", type=Path, required=True, help="a store search_scale.py built and kept (…/n1000000)")
    ap.add_argument("--group", default="g1", help="the principal's group (search_scale: g1 = 1 %% scattered)")
    ap.add_argument("--nice", type=int, default=10, help="the embedder's nice value, like server.sync_nice (19: SCHED_IDLE)")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="the embedder's threads (default: all cores but one, as server.sync_threads)")
    ap.add_argument("--pairs", type=int, default=10, help="idle/busy block pairs per variant")
    ap.add_argument("--block", type=float, default=4.0, help="seconds per block")
    ap.add_argument("--variants", default="1:memory,0:memory,1:take,0:take",
                    help="BLAS threads (0: the library's default) : rows from memory or take, comma-separated")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    store = LanceStore(args.path, embedder_id="bench-synthetic", dimension=DIM)
    store.warm()
    qvecs, qtexts, _ = make_queries(TopicModel(1), 400, 7)
    current = {"v": None}
    retriever = HybridRetriever(store, lambda q: current["v"], candidates=CANDIDATES)
    principal = Principal("bench", frozenset({args.group}))
    if not store.exact_path(principal.labels()):
        raise SystemExit("the group is not on the exact path: pick a smaller one (--group)")
    for q in qvecs[:20]:  # the group's entries read into memory
        store.search_dense(q, principal.labels(), K)

    ctx = mp.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_embedder, args=(args.nice, args.threads, stop, ready), daemon=True)
    proc.start()
    if not ready.wait(300):
        raise SystemExit("the embedder did not start")
    os.kill(proc.pid, signal.SIGSTOP)
    results = []
    try:
        for variant in args.variants.split(","):
            blas, rows = variant.split(":")
            store.show_from_memory = rows == "memory"
            with threadpool_limits(int(blas) or None, user_api="blas"):
                r = measure(store, retriever, current, principal, qvecs, qtexts, proc.pid, args.pairs, args.block)
            r |= {"blas_threads": int(blas) or os.cpu_count(), "rows": rows}
            results.append(r)
            print(f"\nBLAS {r['blas_threads']} thread(s), rows from {rows}; embedder nice {args.nice}, "
                  f"{args.threads} thread(s); {r['idle']['dense']['n']} idle / {r['busy']['dense']['n']} busy queries")
            for p in PARTS:
                a, b = r["idle"][p], r["busy"][p]
                print(f"  {p:8} idle p50 {a['p50']:6.2f}  p95 {a['p95']:6.2f} ms | busy p50 {b['p50']:6.2f}  "
                      f"p95 {b['p95']:6.2f} ms | p95 ratio {r['ratio_p95'][p]:.2f}", flush=True)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        stop.set()
        proc.join(30)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
