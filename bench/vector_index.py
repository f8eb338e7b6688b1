"""IVF_SQ against IVF_PQ on the same chunks: dense latency and recall@10, queries alternating between them.

Two stores kept by bench/search_scale.py hold the same 1M chunks, one with each kind of vector index
(``--vector-index``: ``--reuse`` rebuilds a kept store's index as the asked kind). Every query runs on
every variant before the next query, in alternating order, so all variants meet the same machine
(this VM's speed drifts by 2x within minutes): differences between variants are the index's, not the
moment's. A variant is a store plus nprobes and refine_factor; recall@10 is against exact filtered
search (numpy over the same synthetic corpus). ``--cold`` drops the OS page cache first (root only)
and loads the indexes as ``bastion serve`` does, so the first pass reads the data files from disk.

    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m --keep --no-sync --queries 20 --vector-index ivf_pq
    cp -r /tmp/s1m /tmp/s1m_sq
    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m_sq --reuse --keep --no-sync --queries 20
    python bench/vector_index.py --pq /tmp/s1m/n1000000 --sq /tmp/s1m_sq/n1000000 --json bench/results/vector-index.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from _common import DIM, Corpus, K, TopicModel, exact_topk, make_queries
from bastion.stores.lance import LanceStore, acl_filter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pq", required=True, help="store directory whose vector index is IVF_PQ")
    ap.add_argument("--sq", required=True, help="store directory whose vector index is IVF_SQ")
    ap.add_argument("--size", type=int, default=1_000_000, help="chunks in both stores (search_scale --sizes)")
    ap.add_argument("--seed", type=int, default=1, help="search_scale's --seed of the stores")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--groups", default="g10,g50,all", help="ACL groups of search_scale's corpus (1 %% groups take the exact path)")
    ap.add_argument("--variants", default="pq:20:10,sq:20:2,sq:20:0,sq:15:2",
                    help="store:nprobes:refine_factor, comma-separated (refine 0: none)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache first (root)")
    ap.add_argument("--json")
    args = ap.parse_args()

    model = TopicModel(args.seed)
    corpus = Corpus(model, args.size, args.seed)
    qvecs, _, _ = make_queries(model, args.queries, args.seed + 7 * args.size)
    t0 = time.perf_counter()
    truth = exact_topk(corpus, qvecs)
    print(f"{args.size:,} chunks, {args.queries} queries; exact truth in {time.perf_counter() - t0:.1f}s", flush=True)
    del corpus
    if args.cold:
        done = subprocess.run("sync && echo 1 > /proc/sys/vm/drop_caches", shell=True, capture_output=True)
        print("page cache dropped" if done.returncode == 0 else f"could not drop the page cache: {done.stderr.decode().strip()}")
    stores, out = {}, {"size": args.size, "queries": args.queries, "cold": args.cold, "stores": {}, "cells": []}
    for name, path in (("pq", args.pq), ("sq", args.sq)):
        store = LanceStore(path, embedder_id="bench-synthetic", dimension=DIM, vector_index="ivf_" + name)
        if store.vector_index_built != "IVF_" + name.upper():
            raise SystemExit(f"--{name} {path}: its vector index is {store.vector_index_built}")
        t0 = time.perf_counter()
        store.warm()
        index = next(i for i in store.lancedb().table.list_indices() if i.columns[0] == "vector")
        out["stores"][name] = {"path": path, "index_bytes": index.size_bytes, "warm_s": time.perf_counter() - t0}
        print(f"{name}: {index.index_type}, {index.size_bytes / 1e6:.0f} MB, loaded in {out['stores'][name]['warm_s']:.2f}s", flush=True)
        stores[name] = store
    variants = {}
    for spec in args.variants.split(","):
        name, nprobes, refine = spec.split(":")
        variants[spec] = (stores[name], int(nprobes), int(refine))
    print("\n| group | variant (index:nprobes:refine) | p50 ms | p95 ms | first-100 p95 ms | recall@10 (min) |\n|---|---|---:|---:|---:|---:|")
    for group in args.groups.split(","):
        where = acl_filter(frozenset({f"group:{group}"}))
        lat: dict[str, list[float]] = {v: [] for v in variants}
        rec: dict[str, list[float]] = {v: [] for v in variants}
        names = list(variants)
        for i in range(args.queries):
            for v in names if i % 2 == 0 else names[::-1]:
                store, nprobes, refine = variants[v]
                lance = store.lancedb()  # the store's own async query path, with this variant's nprobes and refine
                q = (lance.async_table.vector_search(qvecs[i]).column("vector").distance_type("cosine").where(where)
                     .limit(K).select(["chunk_id", "_distance"]).nprobes(nprobes))
                if refine:
                    q = q.refine_factor(refine)
                t0 = time.perf_counter()
                t = lance.run(q.to_arrow())
                lat[v].append((time.perf_counter() - t0) * 1000)
                got = {int(c[1:]) for c in t.column("chunk_id").to_pylist()}
                want = set(truth[group][1][i].tolist()) - {-1}
                rec[v].append(len(want & got) / max(1, len(want)))
        for v in names:
            cell = {"group": group, "variant": v, "p50": float(np.percentile(lat[v], 50)),
                    "p95": float(np.percentile(lat[v], 95)), "first100_p95": float(np.percentile(lat[v][:100], 95)),
                    "recall": float(np.mean(rec[v])), "recall_min": float(np.min(rec[v]))}
            out["cells"].append(cell)
            print(f"| {group} | {v} | {cell['p50']:.1f} | {cell['p95']:.1f} | {cell['first100_p95']:.1f} | "
                  f"{cell['recall']:.3f} ({cell['recall_min']:.1f}) |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
