"""What a small group's BM25 ranking costs: from the terms held in memory against the full-text index.

A principal on the exact path (at most ``search.exact_threshold`` authorised chunks, beside an ANN
index) gets its BM25 ranking from its chunks' terms held in memory with their vectors
(:mod:`bastion.stores.postings`); until v14 it came from LanceDB's full-text index with the ACL
pre-filter, which scores among the whole table's posting lists. Each query is ranked both ways
(top 50 ids, the hybrid retriever's candidate depth), alternating which goes first, so both meet
the same machine. Also reports how many of the index's top 10 the memory ranking has in its top 10
(they score with different statistics: the group's against the whole table's; bench/group_bm25.py
measures what that does to quality on real questions).

Runs on a store kept by bench/search_scale.py (``--keep``):

    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m --keep --diag-queries 0 --no-sync --queries 100
    python bench/terms_cost.py /tmp/s1m/n1000000 --json bench/results/terms-cost-1m.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import DIM, TopicModel, make_queries
from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze
from bastion.stores.lance import LanceStore

DEPTH = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="a store directory search_scale.py --keep left (e.g. /tmp/s1m/n1000000)")
    ap.add_argument("--groups", default="g1,g1c", help="search_scale's groups on the exact path (g1: 1 %%, g1c: 1 %% clustered)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1, help="search_scale.py's --seed the store was built with")
    ap.add_argument("--json")
    args = ap.parse_args()
    store = LanceStore(args.store, embedder_id="bench-synthetic", dimension=DIM)
    store.warm()
    model = TopicModel(args.seed)
    _, texts, _ = make_queries(model, args.queries + 20, args.seed + store.count())
    out = {}
    print(f"{store.count():,} chunks, {args.queries} queries per group, top {DEPTH} ids")
    print("| group | authorised | memory p50 / p95 ms | index p50 / p95 ms | ratio p50 | index top 10 in memory top 10 |")
    print("|---|---:|---:|---:|---:|---:|")
    for group in args.groups.split(","):
        labels = Principal("bench", frozenset({group})).labels()
        if not store.exact_path(labels, kind="terms"):
            raise SystemExit(f"group {group} is not on the exact path in {args.store}")
        lat = {"memory": [], "index": []}
        overlap = []
        for i, text in enumerate(texts):
            terms = analyze(text)
            got = {}
            for name in (("memory", "index") if i % 2 else ("index", "memory")):
                t0 = time.perf_counter()
                if name == "memory":
                    got[name] = [r.chunk_id for r in store.rank_terms(terms, labels, DEPTH)]
                else:
                    got[name] = [r.chunk_id for r in store.rank_terms(terms, labels, DEPTH, exact=False)]
                if i >= 20:  # the first read the group's entry and warm up
                    lat[name].append((time.perf_counter() - t0) * 1000)
            if i >= 20 and got["index"]:
                top = got["index"][:10]
                overlap.append(len(set(top) & set(got["memory"][:10])) / len(top))
        fig = {name: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))} for name, v in lat.items()}
        fig["overlap@10"] = float(np.mean(overlap))
        fig["authorised"] = store.authorised(labels)
        out[group] = fig
        print(f"| {group} | {fig['authorised']:,} | {fig['memory']['p50']:.1f} / {fig['memory']['p95']:.1f} "
              f"| {fig['index']['p50']:.1f} / {fig['index']['p95']:.1f} | {fig['index']['p50'] / fig['memory']['p50']:.1f}x "
              f"| {fig['overlap@10']:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "figures": out}, indent=2))


if __name__ == "__main__":
    main()
