"""What one sync batch costs to commit as the index grows: LanceDB's merge_insert against Bastion's swap.

A sync commits its documents a batch at a time (``ingest.batch_chunks``, 256 chunks) with
``LanceStore.replace_documents``: the documents' old chunks go, the new ones come, in one commit.
Until v12 that was LanceDB's ``merge_insert("chunk_id")`` with ``when_not_matched_by_source_delete``,
a full outer join of the batch with the whole table (it reads ``chunk_id`` and ``doc_id`` of every
row); now the old rows are found through the ``doc_id`` index and the deletion and the new fragment
are committed as one Lance ``Update``. Both variants write the same batches into the same store,
alternating, so each pair ran under the same conditions; the second half of the batches replace the
documents the first half added (an update, not only an insert).

Runs on stores kept by bench/search_scale.py (``--keep``), and leaves them as it found them:

    python bench/search_scale.py --sizes 10000,100000 --path /tmp/scale --keep --no-sync --queries 20
    python bench/search_scale.py --sizes 1000000 --path /tmp/s1m --keep --no-sync --queries 20
    python bench/write_cost.py /tmp/scale/n10000 /tmp/scale/n100000 /tmp/s1m/n1000000
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from _common import DIM, TopicModel, sync_batch
from bastion.stores.lance import LanceStore
from bastion.stores.lance_schema import quote


def merge_insert(store: LanceStore, doc_ids: list[str], chunks) -> None:
    """The v11 replace_documents body."""
    scope = f"doc_id IN ({', '.join(quote(d) for d in sorted(set(doc_ids)))})"
    (store.lancedb().table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
        .when_not_matched_by_source_delete(scope).execute(store.arrow(chunks)))


def run_store(path: Path, args) -> dict:
    store = LanceStore(path, embedder_id="bench-synthetic", dimension=DIM)
    rows = store.count()
    model, rng = TopicModel(args.seed), np.random.default_rng(args.seed)
    batches = [sync_batch(model, rng, 9000 + b, args.batch) for b in range(args.batches)]
    times: dict[str, list[float]] = {"merge_insert": [], "bastion": []}
    for rnd in range(2):  # round 0 inserts new documents, round 1 replaces them
        for b, (doc_ids, chunks) in enumerate(batches):
            if rnd:  # new text for the same documents: every old chunk goes, every new one comes
                chunks = [replace(c, chunk_id=c.chunk_id + "u", text=c.text + " revised") for c in chunks]
            variant = "merge_insert" if (b + rnd) % 2 == 0 else "bastion"
            t0 = time.perf_counter()
            if variant == "merge_insert":
                merge_insert(store, doc_ids, chunks)
            else:
                store.replace_documents(doc_ids, chunks)
            times[variant].append(time.perf_counter() - t0)
    written = store.count() - rows
    assert written == args.batches * args.batch, (written, args.batches * args.batch)  # replaced, not doubled
    store.lancedb().table.delete("doc_id LIKE 'sync-%'")
    store.optimize()
    assert store.count() == rows
    out = {"rows": rows, "batch": args.batch}
    for variant, xs in times.items():
        out[f"{variant}_p50_s"], out[f"{variant}_max_s"] = float(np.median(xs)), float(max(xs))
    out["ratio_p50"] = out["merge_insert_p50_s"] / out["bastion_p50_s"]
    print(f"{rows:>9,} chunks: merge_insert p50 {out['merge_insert_p50_s'] * 1000:.0f} ms (max {out['merge_insert_max_s'] * 1000:.0f}), "
          f"Bastion p50 {out['bastion_p50_s'] * 1000:.0f} ms (max {out['bastion_max_s'] * 1000:.0f}): {out['ratio_p50']:.1f}x", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stores", nargs="+", type=Path, help="store folders kept by search_scale.py (e.g. /tmp/s1m/n1000000)")
    ap.add_argument("--batches", type=int, default=10, help="batches per round (two rounds: insert, then replace)")
    ap.add_argument("--batch", type=int, default=256, help="chunks per batch (ingest.batch_chunks)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = [run_store(p, args) for p in args.stores]
    print("\n| chunks in the index | batch | merge_insert p50 / max ms | Bastion p50 / max ms | ratio p50 |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {r['batch']} | {r['merge_insert_p50_s'] * 1000:.0f} / {r['merge_insert_max_s'] * 1000:.0f} "
              f"| {r['bastion_p50_s'] * 1000:.0f} / {r['bastion_max_s'] * 1000:.0f} | {r['ratio_p50']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
