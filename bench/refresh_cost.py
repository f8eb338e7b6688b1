"""What a commit costs the next exact-path search: the refresh of the group's in-memory vectors.

A small group's dense search runs exactly over vectors held in memory (:mod:`bastion.stores.exact`);
after each commit another process makes, the next search refreshes them first: it lists the group's
row ids and reads the new rows. This bench opens a store built by ``search_scale.py --keep`` as a
reader and as a writer (two ``LanceStore`` objects: their caches are separate, as a server's and a
sync's are), then, ``--commits`` times, commits ``--batch`` synthetic chunks through the writer and
times the reader's next two searches: the first refreshes, the second does not. Per phase of the
first: the listing, the read of new rows, and the rest of the refresh (set arithmetic, copies).
Prints p50 / p95 per figure; the writer's rows are deleted at the end.

    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m --keep --diag-queries 0 --no-sync --queries 100
    python bench/refresh_cost.py --store /tmp/s1m/n1000000
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np

from _common import DIM, TopicModel, make_queries, sync_batch
from bastion.core.types import Principal
from bastion.stores.lance import LanceStore


def _timed(obj, name: str, into: dict) -> None:
    real = getattr(obj, name)

    @functools.wraps(real)
    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            into.setdefault(name, 0.0)
            into[name] += (time.perf_counter() - t0) * 1000

    setattr(obj, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a store directory search_scale.py --keep left (e.g. /tmp/s1m/n1000000)")
    ap.add_argument("--group", default="g1", help="the principal's group (search_scale's: g1 1 %%, g1c 1 %% clustered)")
    ap.add_argument("--commits", type=int, default=40)
    ap.add_argument("--batch", type=int, default=500, help="chunks per commit")
    ap.add_argument("--optimize-every", type=int, default=0,
                    help="the writer runs optimize() after this many chunks, as a sync does (index.optimize_every_chunks); "
                         "0: never (the listing then scans ever more unindexed rows)")
    ap.add_argument("--seed", type=int, default=1, help="search_scale's --seed the store was built with")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    reader = LanceStore(args.store, embedder_id="bench-synthetic", dimension=DIM)
    writer = LanceStore(args.store, embedder_id="bench-synthetic", dimension=DIM)
    reader.warm()
    model = TopicModel(args.seed)
    qvecs, _, _ = make_queries(model, 30 + 2 * args.commits, args.seed + reader.count())  # as search_scale.py draws them
    labels = Principal("bench", frozenset({args.group})).labels()
    phases: dict[str, float] = {}
    for name in ("list_rows", "read_rows", "read_key"):  # the in-memory entries' reads (LanceStore.rows)
        _timed(reader.rows, name, phases)
    # the whole refresh of a principal's entries: ExactSets' own step, timed from outside (no public hook)
    _timed(reader.exact_sets, "_refresh", phases)
    for v in qvecs[:30]:  # reads the group's entry, warms up
        reader.rank_dense(v, labels, 10)
    if reader.exact_sets.nbytes == 0:
        raise SystemExit(f"group {args.group} is not on the exact path in {args.store}")
    rng = np.random.default_rng(args.seed + 1)
    rows: dict[str, list[float]] = {"first after a commit": [], "next": [], "listing": [], "new rows read": [],
                                    "refresh, the rest": [], "first after an optimize": []}
    whole, unindexed = 0, 0
    try:
        for b in range(args.commits):
            doc_ids, chunks = sync_batch(model, rng, 90_000 + b, args.batch)
            writer.replace_documents(doc_ids, chunks)
            unindexed += len(chunks)
            optimized = args.optimize_every and unindexed >= args.optimize_every
            if optimized:
                writer.optimize()
                unindexed = 0
            phases.clear()
            for label in ("first after an optimize" if optimized else "first after a commit", "next"):
                t0 = time.perf_counter()
                reader.rank_dense(qvecs[30 + 2 * b + (label == "next")], labels, 10)
                rows[label].append((time.perf_counter() - t0) * 1000)
                whole += "read_key" in phases
                if label == "first after a commit":
                    rows["listing"].append(phases.get("list_rows", 0.0))
                    rows["new rows read"].append(phases.get("read_rows", 0.0))
                    rows["refresh, the rest"].append(phases["_refresh"] - rows["listing"][-1] - rows["new rows read"][-1])
    finally:
        writer.lancedb().table.delete("doc_id LIKE 'sync-%'")
    out = {name: {"p50": float(np.percentile(xs, 50)), "p95": float(np.percentile(xs, 95)), "n": len(xs)}
           for name, xs in rows.items() if xs}
    out["whole key reads"] = whole
    print(f"{reader.count():,} chunks, group {args.group}, {args.commits} commits of {args.batch} chunks, "
          f"optimize every {args.optimize_every or 'never'}; the group's whole entry read again {whole} times")
    print("| search | p50 ms | p95 ms | searches |\n|---|---:|---:|---:|")
    for name, d in out.items():
        if isinstance(d, dict):
            print(f"| {name} | {d['p50']:.1f} | {d['p95']:.1f} | {d['n']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "figures": out}, indent=2))


if __name__ == "__main__":
    main()
