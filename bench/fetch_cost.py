"""What reading a search's k hits costs: by row id (``LanceStore.fetch`` now) against the chunk_id look-up.

A hybrid search ranks ids in both legs, fuses them and reads the rows of the k it keeps; a dense
search on the exact path (small groups) ranks from memory and reads its k the same way. Until v13
that read was one LanceDB query ``chunk_id IN (...) AND <ACL filter>`` (BTREE look-ups); now a chunk
that a ranking under the same labels found is read by its row id (Lance ``take``), the look-up only
for the rest. Each query's hybrid ranking is read both ways, alternating which goes first, so both
meet the same machine; the rows must be the same.

Runs on a store kept by bench/search_scale.py (``--keep``):

    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m_sq --keep --no-sync --queries 20
    python bench/fetch_cost.py /tmp/s1m_sq/n1000000 --json bench/results/fetch-cost-1m.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import DIM, K, TopicModel, make_queries
from bastion.core.types import Principal
from bastion.retrieval.hybrid import HybridRetriever
from bastion.stores.lance import LanceStore, acl_filter
from bastion.stores.lance_schema import expand, quote


def lookup(store: LanceStore, ranked, labels) -> list[dict]:
    """The v12 fetch: one LanceDB query by chunk id under the ACL filter."""
    ids = sorted({cid for cid, _ in ranked})
    where = f"chunk_id IN ({', '.join(quote(c) for c in ids)}) AND {acl_filter(labels)}"
    lance = store.lancedb()
    table = lance.run(lance.async_table.query().where(where).limit(len(ids)).select(store.read_columns).to_arrow())
    rows = {r["chunk_id"]: expand(r) for r in table.to_pylist()}
    return [rows[cid] for cid, _ in ranked if cid in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", help="a store directory kept by search_scale.py")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--groups", default="g1,g10,all")
    ap.add_argument("--json")
    args = ap.parse_args()
    model = TopicModel(args.seed)
    qvecs, qtexts, _ = make_queries(model, args.queries, args.seed + 99)
    store = LanceStore(args.store, embedder_id="bench-synthetic", dimension=DIM)
    store.warm()
    current = {"v": None}
    retriever = HybridRetriever(store, lambda q: current["v"])
    out = {"store": args.store, "rows": store.count(), "queries": args.queries, "cells": []}
    print(f"{out['rows']:,} chunks, {args.queries} hybrid rankings per group, k={K}\n")
    print("| group | by row id p50 / p95 ms | chunk_id look-up p50 / p95 ms | ratio p50 | same rows |\n|---|---:|---:|---:|---:|")
    for group in args.groups.split(","):
        principal = Principal("bench", frozenset({group}))
        labels = principal.labels()
        lat = {"take": [], "lookup": []}
        same = 0
        for i in range(args.queries):
            current["v"] = qvecs[i]
            ranked = retriever.rank(qtexts[i], labels, K)[:K]
            order = ("take", "lookup") if i % 2 == 0 else ("lookup", "take")
            got = {}
            for way in order:
                t0 = time.perf_counter()
                got[way] = ([h.row for h in store.fetch(ranked, labels)] if way == "take" else lookup(store, ranked, labels))
                lat[way].append((time.perf_counter() - t0) * 1000)
            same += got["take"] == got["lookup"]
        cell = {"group": group, "same": same}
        for way, xs in lat.items():
            cell[f"{way}_p50"], cell[f"{way}_p95"] = float(np.percentile(xs, 50)), float(np.percentile(xs, 95))
        out["cells"].append(cell)
        print(f"| {group} | {cell['take_p50']:.1f} / {cell['take_p95']:.1f} | {cell['lookup_p50']:.1f} / {cell['lookup_p95']:.1f} "
              f"| {cell['lookup_p50'] / cell['take_p50']:.2f}x | {same}/{args.queries} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
