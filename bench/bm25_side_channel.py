"""What the order of BM25 hits still tells a principal about text it may not read.

The full-text index scores BM25 with term statistics of the whole table (document frequencies and
the mean chunk length of every chunk, those the ACL filter refuses included), so the store returns
only the rank of each hit on that path (``stores/lance.py`` ``_rank_score``), never the raw score.
The order itself can still differ from the order the principal's own statistics would give: that
difference is the remaining side channel. This bench measures how often it shows, on real
questions: the shared SQuAD 2.0 dev half (English) and CMRC 2018 dev (Chinese), each distinct
paragraph one chunk of a real ``LanceStore``; groups as in ``group_bm25.py`` (random 5 % / 20 % of
the paragraphs, and for SQuAD whole articles). Each question whose gold paragraph the group may
read is asked twice through ``rank_terms``: on the exact path (statistics of the group's own
chunks, nothing else can move it) and on the full-text index (the table's). Reported per group:
the share of questions whose top-10 ids differ as a list (order), and as a set.

    python bench/bm25_side_channel.py --json bench/results/bm25-side-channel.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from _common import RANDOM_DIM as DIM
from _common import add_data_argument, datasets, group_stores, groups, load
from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze

K = 10


def run_language(lang: str, path: Path, tmp: Path, draws: int, seed: int) -> dict:
    texts, article_of, questions = load(path)
    cells = groups(article_of, draws, seed)
    vecs = np.random.default_rng(seed).standard_normal((len(texts), DIM)).astype(np.float32)
    memory, index = group_stores(lang, texts, cells, vecs, tmp)
    analysed = [analyze(q) for _, q, _ in questions]
    out = {"paragraphs": len(texts), "groups": []}
    print(f"\n## {lang}: {len(texts)} paragraphs")
    print("| group | paragraphs | questions | top-10 order differs | top-10 set differs | first hit differs |\n"
          "|---|---:|---:|---:|---:|---:|")
    for j, (name, mask) in enumerate(cells):
        labels = Principal("bench", frozenset({str(j)})).labels()
        asked = [terms for terms, (_, _, gold) in zip(analysed, questions) if mask[gold] and terms]
        order = members = first = 0
        for terms in asked:
            a = [r.chunk_id for r in memory.rank_terms(terms, labels, K)]
            b = [r.chunk_id for r in index.rank_terms(terms, labels, K)]
            order += a != b
            members += set(a) != set(b)
            first += a[:1] != b[:1]
        n = max(1, len(asked))
        cell = {"group": name, "paragraphs": int(mask.sum()), "questions": len(asked),
                "order_differs": order / n, "set_differs": members / n, "first_differs": first / n}
        out["groups"].append(cell)
        print(f"| {name} | {cell['paragraphs']} | {len(asked)} | {cell['order_differs']:.1%} | "
              f"{cell['set_differs']:.1%} | {cell['first_differs']:.1%} |", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=3, help="groups drawn per kind")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    add_data_argument(ap)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, path in datasets(args.data):
            out[lang] = run_language(lang, path, Path(tmp), args.draws, args.seed)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
