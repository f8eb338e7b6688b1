"""Helpers shared by the bench scripts: where the shared datasets are, how they are read, and the
synthetic corpus of the scale benchmarks.

Every script runs as ``python bench/<script>.py``; Python puts ``bench/`` first on ``sys.path`` then,
so ``from _common import ...`` needs no path set-up. Scripts do not import each other's helpers:
what two of them share lives here.

- ``add_data_argument`` / ``DEFAULT_DATA``: the ``--data DIR`` option, the folder holding the shared
  datasets (``squad2-dev-half.json``, ``cmrc2018-dev.json``); by default ``../shared/datasets``
  beside the repository.
- ``datasets``, ``load``, ``groups``, ``metrics``: the QA datasets as a corpus of paragraphs with
  questions, and random ACL groups over them (bench/group_bm25.py, bench/bm25_side_channel.py).
- ``TopicModel``, ``Corpus``, ``make_queries``, ``exact_topk``, ``sync_batch``: a deterministic
  synthetic corpus of topic-clustered vectors and pseudo-words with ACL groups of 1 % (scattered
  and clustered), 10 %, 50 % and 100 % (bench/search_scale.py and the scripts that reuse its stores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from bastion.stores.lance import LanceStore
    from bastion.stores.protocol import StoredChunk

# bastion (and pyarrow) are imported where used: scripts that only read the datasets, or drive
# `bastion` as a subprocess, do not load the store.

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets"
RANDOM_DIM = 32  # random vectors of the QA-dataset stores whose dense search is not measured


def add_data_argument(ap: argparse.ArgumentParser) -> None:
    """The ``--data DIR`` option (``--datasets`` is the same option): the shared datasets' folder."""
    ap.add_argument("--data", "--datasets", dest="data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                    help="the folder holding the shared datasets (squad2-dev-half.json, cmrc2018-dev.json); "
                         "default: ../shared/datasets beside the repository (%(default)s)")


# -- the shared QA datasets -------------------------------------------------------------------
def load(path: Path) -> tuple[list[str], list[int], list[tuple[str, str, int]]]:
    """Distinct paragraphs, the article of each, and (question id, question, gold paragraph) of answerable
    questions (paragraphs and questions in retrieval_quality.py's order, so its vector caches apply)."""
    index: dict[str, int] = {}
    article_of: list[int] = []
    questions = []
    for a, article in enumerate(json.loads(path.read_text(encoding="utf-8"))["data"]):
        for p in article["paragraphs"]:
            if p["context"] not in index:
                index[p["context"]] = len(index)
                article_of.append(a)
            questions += [(q["id"], q["question"], index[p["context"]]) for q in p["qas"] if not q.get("is_impossible")]
    return list(index), article_of, questions


def datasets(data: Path) -> list[tuple[str, Path]]:
    """(language, path) of the shared QA datasets in ``data``; exits naming one that is missing."""
    out = [(lang, data / name) for lang, name in (("en", "squad2-dev-half.json"), ("zh", "cmrc2018-dev.json"))]
    for _, path in out:
        if not path.exists():
            sys.exit(f"missing {path}: pass the shared datasets' folder as --data DIR")
    return out


def metrics(ranks: list[int | None]) -> dict[str, float]:
    n = max(1, len(ranks))
    out = {f"R@{k}": sum(1 for r in ranks if r and r <= k) / n for k in (1, 5, 10)}
    out["MRR@10"] = sum(1 / r for r in ranks if r) / n
    return out


def groups(article_of: list[int], draws: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(name, bool mask over paragraphs) of each group measured."""
    n = len(article_of)
    rng = np.random.default_rng(seed)
    out = []
    for share in (0.05, 0.2):
        for d in range(draws):
            m = np.zeros(n, bool)
            m[rng.permutation(n)[: int(n * share)]] = True
            out.append((f"random {share:.0%} #{d + 1}", m))
    articles = np.asarray(article_of)
    if len(set(article_of)) < n / 4:  # articles of many paragraphs: groups that own whole subjects
        ids = np.unique(articles)
        for d in range(draws):
            chosen = rng.choice(ids, max(1, len(ids) // 8), replace=False)
            out.append((f"{len(chosen)} of {len(ids)} articles #{d + 1}", np.isin(articles, chosen)))
    return out


# -- the synthetic corpus -----------------------------------------------------------------
DIM = 384
TOPICS, SUBTOPICS = 1000, 8
SUB_W, NOISE_W = 0.6, 0.8
TOPIC_VOCAB, GLOBAL_VOCAB, COMMON_VOCAB = 40, 20_000, 300
TOPIC_WORDS, COMMON_WORDS = 30, 15
K, CANDIDATES = 10, 50
LOAD_BATCH = 100_000
# name -> (group label, share)
ACLS = {"1% scattered": "g1", "1% clustered": "g1c", "10%": "g10", "50%": "g50", "100%": "all"}


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _zipf(n: int, s: float = 1.07) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def _pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """Distinct pronounceable words that the analyser (lower-case, stop words, Snowball) leaves unchanged."""
    from bastion.retrieval.analyzer import analyze

    cons, vows = list("bcdfghjklmnprstvz"), list("aeiou")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        syl = rng.integers(2, 5)
        w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(syl)) + rng.choice(cons)
        if w not in seen and analyze(w) == [w]:
            seen.add(w)
            out.append(w)
    return out


class TopicModel:
    """Topic centres, sub-topic directions and vocabularies; deterministic in the seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.centres = _norm(rng.standard_normal((TOPICS, DIM), dtype=np.float32))
        self.subs = _norm(rng.standard_normal((TOPICS, SUBTOPICS, DIM), dtype=np.float32))
        words = _pseudo_words(rng, GLOBAL_VOCAB + COMMON_VOCAB)
        self.vocab = words  # ids 0..GLOBAL_VOCAB-1 topic words, then common words
        self.topic_vocab = np.stack([rng.choice(GLOBAL_VOCAB, TOPIC_VOCAB, replace=False) for _ in range(TOPICS)])
        self.p_topic, self.p_common = _zipf(TOPIC_VOCAB), _zipf(COMMON_VOCAB)

    def vectors(self, rng: np.random.Generator, topic: np.ndarray, sub: np.ndarray) -> np.ndarray:
        noise = _norm(rng.standard_normal((len(topic), DIM), dtype=np.float32))
        return _norm(self.centres[topic] + SUB_W * self.subs[topic, sub] + NOISE_W * noise).astype(np.float32)

    def words(self, rng: np.random.Generator, topic: np.ndarray, n_topic: int, n_common: int) -> np.ndarray:
        local = rng.choice(TOPIC_VOCAB, size=(len(topic), n_topic), p=self.p_topic)
        tw = self.topic_vocab[topic[:, None], local]
        cw = GLOBAL_VOCAB + rng.choice(COMMON_VOCAB, size=(len(topic), n_common), p=self.p_common)
        return np.concatenate([tw, cw], axis=1).astype(np.int32)

    def text(self, row) -> str:
        return " ".join(self.vocab[i] for i in row)


class Corpus:
    """n chunks: topic, sub-topic, vector, word ids and ACL group membership."""

    def __init__(self, model: TopicModel, n: int, seed: int):
        rng = np.random.default_rng(seed + n)
        self.n = n
        self.topic = rng.integers(0, TOPICS, n)
        self.sub = rng.integers(0, SUBTOPICS, n)
        self.vectors = np.empty((n, DIM), np.float32)
        for s in range(0, n, LOAD_BATCH):
            self.vectors[s:s + LOAD_BATCH] = model.vectors(rng, self.topic[s:s + LOAD_BATCH], self.sub[s:s + LOAD_BATCH])
        self.words = model.words(rng, self.topic, TOPIC_WORDS, COMMON_WORDS)
        perm = rng.permutation(n)
        self.members = {"all": np.ones(n, bool)}
        for g, share in (("g1", 0.01), ("g10", 0.10), ("g50", 0.50)):
            m = np.zeros(n, bool)
            m[perm[: int(n * share)]] = True  # scattered uniformly: a random subset of all chunks
            self.members[g] = m
            perm = rng.permutation(n)
        clustered_topics = rng.choice(TOPICS, TOPICS // 100, replace=False)
        self.members["g1c"] = np.isin(self.topic, clustered_topics)

    def arrow_batch(self, model: TopicModel, start: int, stop: int) -> pa.Table:
        idx = np.arange(start, stop)
        texts = [model.text(r) for r in self.words[start:stop].tolist()]
        acl = [[f"group:{g}" for g in ("all", "g1", "g1c", "g10", "g50") if self.members[g][i]] for i in idx]
        docs = [f"d{i // 10:07d}" for i in idx]
        import pyarrow as pa

        from bastion.stores import lance_schema

        schema = lance_schema.schema(DIM)
        cols = {
            "chunk_id": [f"c{i:07d}" for i in idx], "doc_id": docs, "version_id": ["v1"] * len(idx),
            "source": ["bench"] * len(idx), "document": docs, "path": [f"/bench/{d}.txt" for d in docs],
            "page": [None] * len(idx), "section": [None] * len(idx), "ordinal": (idx % 10).tolist(),
            "text": texts, "terms": texts, "char_start": [0] * len(idx), "char_end": [len(t) for t in texts],
            "acl": acl,
        }
        cols["cite"] = [lance_schema.pack_cite({name: cols[name][j] for name in lance_schema.CITE}) for j in range(len(idx))]
        arrays = {k: pa.array(v, type=schema.field(k).type) for k, v in cols.items()}
        arrays["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(self.vectors[start:stop].reshape(-1)), DIM)
        return pa.table(arrays, schema=schema)


def make_queries(model: TopicModel, n: int, seed: int) -> tuple[np.ndarray, list[str], list[list[int]]]:
    rng = np.random.default_rng(seed + 7)
    topic, sub = rng.integers(0, TOPICS, n), rng.integers(0, SUBTOPICS, n)
    vecs = model.vectors(rng, topic, sub)
    ids = model.words(rng, topic, 3, 1)
    uniq = [list(dict.fromkeys(r)) for r in ids.tolist()]
    return vecs, [model.text(r) for r in uniq], uniq


def exact_topk(corpus: Corpus, qvecs: np.ndarray, k: int = K, block: int = 50_000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Brute-force top-k ids and cosines per ACL group (vectors are unit-norm, so cosine = dot)."""
    nq = len(qvecs)
    best = {g: (np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)) for g in ACLS.values()}
    for s in range(0, corpus.n, block):
        sims = qvecs @ corpus.vectors[s:s + block].T
        for g in best:
            m = corpus.members[g][s:s + block]
            if not m.any():
                continue
            cols = np.flatnonzero(m)
            sub = sims[:, cols]
            kk = min(k, len(cols))
            top = np.argpartition(-sub, kk - 1, axis=1)[:, :kk]
            sc = np.concatenate([best[g][0], np.take_along_axis(sub, top, 1)], axis=1)
            ids = np.concatenate([best[g][1], s + cols[top]], axis=1)
            keep = np.argsort(-sc, axis=1)[:, :k]
            best[g] = (np.take_along_axis(sc, keep, 1), np.take_along_axis(ids, keep, 1))
    return best


def sync_batch(model: TopicModel, rng: np.random.Generator, b: int, size: int) -> tuple[list[str], list[StoredChunk]]:
    """A sync's batch: ``size`` new chunks in documents of ten, ids unique to batch ``b``, random ACL groups."""
    from bastion.stores.protocol import StoredChunk

    topic, sub = rng.integers(0, TOPICS, size), rng.integers(0, SUBTOPICS, size)
    vecs = model.vectors(rng, topic, sub)
    words = model.words(rng, topic, TOPIC_WORDS, COMMON_WORDS)
    doc_ids, chunks = [], []
    for j in range(size):
        doc = f"sync-{b:05d}-{j // 10:03d}"
        if j % 10 == 0:
            doc_ids.append(doc)
        text = model.text(words[j])
        acl = ("group:all",) + tuple(f"group:{g}" for g, p in (("g1", .01), ("g10", .1), ("g50", .5)) if rng.random() < p)
        chunks.append(StoredChunk(chunk_id=f"s{b:05d}-{j:04d}", doc_id=doc, version_id="v1", source="bench",
                                  document=doc, path=f"/sync/{doc}.txt", page=None, section=None, ordinal=j % 10,
                                  text=text, terms=text, char_start=0, char_end=len(text), acl=acl, vector=vecs[j]))
    return doc_ids, chunks


def real_embedder(threads: int) -> Callable[[list[str]], np.ndarray]:
    """The bundled default embedder with ``threads`` threads, batched as the sync pipeline batches it
    (embedder.batch_size)."""
    from bastion.core.config import EmbedderConfig
    from bastion.embedding.factory import build_embedder

    cfg = EmbedderConfig(threads=threads)
    embedder = build_embedder(cfg)
    if embedder.dimension != DIM:
        raise SystemExit(f"--writer-embed: the default embedder has {embedder.dimension} dimensions, the bench {DIM}")
    return lambda texts: np.vstack([embedder.embed_passages(texts[i:i + cfg.batch_size])
                                    for i in range(0, len(texts), cfg.batch_size)])


def lower_priority(nice: int) -> None:
    """This process at the priority the server gives its syncs (server.sync_nice; 19 means SCHED_IDLE:
    only CPU nothing else wants)."""
    if nice:
        os.nice(nice)
    if nice >= 19 and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def group_stores(lang: str, texts: list[str], cells: list[tuple[str, np.ndarray]], vecs: np.ndarray,
                 tmp: Path) -> tuple[LanceStore, LanceStore]:
    """Every paragraph one chunk of a real store, readable by the groups whose mask holds it; returns the
    store twice over one table: ranking from memory (any group's own statistics) and always through the
    full-text index (the table's statistics)."""
    from bastion.retrieval.analyzer import analyze
    from bastion.stores.lance import LanceStore
    from bastion.stores.protocol import StoredChunk

    rows = [StoredChunk(chunk_id=f"p{i:05d}", doc_id=f"p{i:05d}", version_id="v1", source=lang, document=f"p{i}",
                        path=f"p{i}", page=None, section=None, ordinal=0, text=t, terms=" ".join(analyze(t)),
                        char_start=0, char_end=len(t),
                        acl=tuple(f"group:{j}" for j, (_, m) in enumerate(cells) if m[i]) or ("group:none",), vector=v)
            for i, (t, v) in enumerate(zip(texts, vecs))]
    kw = dict(embedder_id="bench", dimension=vecs.shape[1], ann_min_rows=64)
    memory = LanceStore(tmp / lang, exact_threshold=len(texts), **kw)
    memory.replace_documents([r.doc_id for r in rows], rows)
    memory.optimize()
    return memory, LanceStore(tmp / lang, exact_threshold=0, **kw)
