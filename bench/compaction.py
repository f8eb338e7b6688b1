"""What one optimize() costs while a sync grows a large index: Bastion's compaction against LanceDB's.

A sync calls ``store.optimize()`` every ``index.optimize_every_chunks`` (2,048) new chunks. Each call
compacts small data files, folds the new rows into the indexes and drops old versions. LanceDB's own
``Table.optimize()`` compacts toward 1,048,576 rows per fragment, so every fragment under that size is
rewritten together with the new rows, each time: at 1M chunks, the whole table. ``LanceStore`` compacts
toward ``index.fragment_rows`` (262,144) and never touches a larger fragment.

Every variant starts from the same base (``--rows`` synthetic chunks of bench/search_scale.py, loaded in
one bulk write as one data file, indexes built), then run ``--rounds`` rounds of: write ``--batch``
new chunks with ``replace_documents`` (as a sync does), then optimize and time it:

* **lancedb**: ``Table.optimize()`` (compaction, index update, clean-up) plus the store's merge of the
  vector index's segments, so both end with the same indexes;
* **bastion**: ``LanceStore.optimize()``: new rows' terms go into a new segment of the full-text index,
  merged once there would be more than ``max_terms_segments`` (8);
* **bastion-merged-fts**: the same with ``max_terms_segments = 1``, i.e. the new rows folded into the one
  full-text index every time, as before delta segments (LanceDB does that too).

After each round each variant times ``--queries`` BM25 searches (``rank_terms`` over the whole table, top
50; p50 / p95 over all rounds), so what the segments cost a query is measured beside what they save an
optimize.

Printed per variant: optimize seconds (median, max), rows rewritten by compaction (rows of the fragments
that each round replaced), fragments at the end; and the ratio of the two medians, measured in the same
run. ``--json`` writes the figures.

    python bench/compaction.py --rows 100000 --rounds 8
    python bench/compaction.py --rows 1000000 --rounds 8 --fold-after 4   # a fold of small indexed files in round 5
    python bench/compaction.py --rows 1000000 --rounds 8 --variants bastion,bastion-merged-fts
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from _common import DIM, LOAD_BATCH, Corpus, TopicModel, make_queries, sync_batch
from bastion.stores.lance import LanceStore


def _fragments(store: LanceStore) -> dict[int, int]:
    return {f.fragment_id: f.count_rows() for f in store.lancedb().dataset().get_fragments()}


def run_variant(name: str, root: Path, model: TopicModel, corpus: Corpus, args) -> dict:
    store = LanceStore(root / name, embedder_id="bench-synthetic", dimension=DIM, fragment_rows=args.fragment_rows)
    if args.fold_after:
        store.fold_indexed_fragments = args.fold_after
    if name == "bastion-merged-fts":
        store.max_terms_segments = 1
    t0 = time.perf_counter()
    # one write, so one data file of up to 1,048,576 rows: how LanceDB's optimize() leaves a grown table
    store.lancedb().table.add(pa.concat_tables([corpus.arrow_batch(model, s, min(corpus.n, s + LOAD_BATCH))
                                       for s in range(0, corpus.n, LOAD_BATCH)]))
    store.optimize()
    print(f"{name}: base of {corpus.n:,} loaded and indexed in {time.perf_counter() - t0:.1f}s", flush=True)
    rng = np.random.default_rng(args.seed)
    seconds, rewritten, lat, segments = [], [], [], []
    _, texts, _ = make_queries(model, args.queries, args.seed + 5)
    everyone = frozenset({"group:all"})
    for r in range(args.rounds):
        doc_ids, chunks = sync_batch(model, rng, r, args.batch)
        store.replace_documents(doc_ids, chunks)
        before = _fragments(store)
        t0 = time.perf_counter()
        if name == "lancedb":
            store.lancedb().table.optimize(cleanup_older_than=timedelta(hours=1))
            store.maintenance.merge_vector_segments()
        else:
            store.optimize()
        seconds.append(time.perf_counter() - t0)
        after = _fragments(store)
        rewritten.append(sum(n for fid, n in before.items() if fid not in after))
        segments.append(store.stats().indexes["terms"].segments)
        for text in texts:  # what this round's full-text segments cost a search
            t0 = time.perf_counter()
            store.rank_terms(text.split(), everyone, 50)
            lat.append(time.perf_counter() - t0)
        print(f"  round {r + 1}: optimize {seconds[-1]:.2f}s, rows rewritten {rewritten[-1]:,}, "
              f"fragments {len(after)}, full-text segments {segments[-1]}", flush=True)
    indexes = store.stats().indexes
    stats = indexes.get("vector")  # none under LanceStore.ann_min_rows (100k) chunks
    terms = indexes["terms"]
    out = {"variant": name, "optimize_p50_s": float(np.median(seconds)), "optimize_max_s": float(max(seconds)),
           "rows_rewritten": int(sum(rewritten)), "fragments": len(_fragments(store)), "rows": store.count(),
           "vector_segments": stats.segments if stats else 0, "unindexed": stats.unindexed_rows if stats else 0,
           "terms_segments": terms.segments, "terms_segments_per_round": segments,
           "bm25_p50_ms": float(np.percentile(lat, 50) * 1000), "bm25_p95_ms": float(np.percentile(lat, 95) * 1000),
           "seconds": seconds}
    assert out["rows"] == corpus.n + args.rounds * args.batch, out  # nothing lost, nothing doubled
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="chunks in the base")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2048, help="chunks written before each optimize (index.optimize_every_chunks)")
    ap.add_argument("--fragment-rows", type=int, default=262_144, help="LanceStore fragment_rows (index.fragment_rows)")
    ap.add_argument("--fold-after", type=int, default=0,
                    help="LanceStore.fold_indexed_fragments (default: the store's, 16); lower it to see a fold in few rounds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", default="lancedb,bastion,bastion-merged-fts", help="comma-separated, run in this order")
    ap.add_argument("--queries", type=int, default=200, help="BM25 searches timed after each round")
    ap.add_argument("--path", type=Path, help="data directory (default: a temp dir under bench/results/)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in ("lancedb", "bastion", "bastion-merged-fts")]
    if unknown:
        raise SystemExit(f"unknown variant(s): {', '.join(unknown)}")
    root = args.path or Path(tempfile.mkdtemp(prefix="compaction-", dir=Path(__file__).resolve().parent / "results"))
    root.mkdir(parents=True, exist_ok=True)
    model = TopicModel(args.seed)
    corpus = Corpus(model, args.rows, args.seed)
    results = []
    try:
        for name in variants:
            results.append(run_variant(name, root, model, corpus, args))
            shutil.rmtree(root / name, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| variant | optimize p50 s | max s | rows rewritten | fragments | vector segments | unindexed "
          "| full-text segments at the end | BM25 p50 / p95 ms (all rounds) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['optimize_p50_s']:.2f} | {r['optimize_max_s']:.2f} | {r['rows_rewritten']:,} "
              f"| {r['fragments']} | {r['vector_segments']} | {r['unindexed']} | {r['terms_segments']} "
              f"| {r['bm25_p50_ms']:.1f} / {r['bm25_p95_ms']:.1f} |")
    by = {r["variant"]: r for r in results}
    ratios = {f"{other}/bastion": by[other]["optimize_p50_s"] / by["bastion"]["optimize_p50_s"]
              for other in by if other != "bastion" and "bastion" in by}
    for name, ratio in ratios.items():
        print(f"{args.rows:,} chunks, {args.rounds} rounds of {args.batch:,}: optimize() p50 {name} = {ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                         "ratios_p50": ratios}, indent=2))


if __name__ == "__main__":
    main()
