"""Which plan ranks a principal's dense search on PostgreSQL: the exact scan of the rows the ACL index admits,
or the filtered HNSW walk. Both must return the same hits up to the walk's approximation, only readable chunks,
and k of them whenever k are readable."""
from __future__ import annotations

import numpy as np
import pytest

from bastion.stores.protocol import StoredChunk
from tests.pgvector_store.conftest import open_store

pytestmark = pytest.mark.services

N, DIM = 3000, 32


class _Dim:
    id, dimension = "random-32", DIM


def _corpus(seed: int = 7) -> tuple[list[StoredChunk], np.ndarray, np.ndarray]:
    """``N`` random unit vectors: every tenth chunk is ``group:small``'s (10 %), the others ``group:big``'s."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    small = np.arange(N) % 10 == 0
    chunks = [StoredChunk(chunk_id=f"c{i:05d}", doc_id=f"d{i // 10}", version_id="v1", source="s", document=f"d{i // 10}",
                          path=f"d{i // 10}.txt", page=None, section=None, ordinal=i % 10, text=f"chunk {i}",
                          terms=f"chunk {i}", char_start=0, char_end=10,
                          acl=("group:small",) if small[i] else ("group:big",), vector=vectors[i])
              for i in range(N)]
    return chunks, vectors, small


def _loaded(url: str, chunks: list[StoredChunk], **options):
    store = open_store(url, _Dim(), ann_min_rows=1, hnsw_m=8, ef_construction=32, **options)
    for start in range(0, len(chunks), 1000):
        batch = chunks[start:start + 1000]
        store.replace_documents(sorted({c.doc_id for c in batch}), batch)
    store.optimize()
    assert store._has_ann()
    return store


def _exact_top(vectors: np.ndarray, readable: np.ndarray, q: np.ndarray, k: int) -> list[str]:
    idx = np.flatnonzero(readable)
    sims = vectors[idx] @ (q / np.linalg.norm(q))
    return [f"c{i:05d}" for i in idx[np.argsort(-sims)[:k]]]


def test_a_selective_principal_is_ranked_exactly_and_the_walk_agrees(pg_url):
    """10 % of the table readable: the default store ranks it exactly (the numpy order, every query), a store
    told to walk the HNSW index finds nearly the same top 10; both return only the small group's chunks."""
    chunks, vectors, small = _corpus()
    exact_store = _loaded(pg_url, chunks)
    walk_store = open_store(pg_url, _Dim(), exact_threshold=0, dense_exact_share=0, ef_search=200)
    labels = frozenset({"group:small"})
    with exact_store._tx() as cur:
        assert exact_store._exact_dense(cur, labels, None)
    with walk_store._tx() as cur:
        assert not walk_store._exact_dense(cur, labels, None)
    rng = np.random.default_rng(3)
    agree = 0
    for q in rng.standard_normal((20, DIM)).astype(np.float32):
        expected = _exact_top(vectors, small, q, 10)
        exact = [cid for cid, _ in exact_store.rank_dense(q, labels, 10)]
        walked = [cid for cid, _ in walk_store.rank_dense(q, labels, 10)]
        assert exact == expected  # exact: recall 1.0, in order
        assert len(walked) == 10 and all(int(cid[1:]) % 10 == 0 for cid in walked)
        agree += len(set(walked) & set(expected))
        hits = exact_store.search_dense(q, labels, 3)
        assert [h.row["chunk_id"] for h in hits] == expected[:3] and hits[0].row["text"].startswith("chunk ")
    assert agree / 200 >= 0.9, f"the walk found {agree / 200:.2f} of the exact top 10"


def test_a_principal_reading_most_of_the_table_walks_the_index_and_is_denied_the_rest(pg_url):
    """90 % readable: above the exact share, so the HNSW walk ranks it; it gets k hits, never one of the small
    group's chunks (denial), while the small group's principal gets its own (positive control). A principal of
    neither group gets nothing on either plan."""
    chunks, vectors, small = _corpus()
    store = _loaded(pg_url, chunks)
    big, mine, nobody = frozenset({"group:big"}), frozenset({"group:small"}), frozenset({"group:other"})
    with store._tx() as cur:
        assert not store._exact_dense(cur, big, None)
        assert store._exact_dense(cur, mine, None) and store._exact_dense(cur, nobody, None)
    q = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    got = [cid for cid, _ in store.rank_dense(q, big, 10)]
    assert len(got) == 10 and not any(int(cid[1:]) % 10 == 0 for cid in got)
    assert len(set(got) & set(_exact_top(vectors, ~small, q, 10))) >= 8
    assert [cid for cid, _ in store.rank_dense(q, mine, 10)] == _exact_top(vectors, small, q, 10)
    assert store.rank_dense(q, nobody, 10) == [] and store.search_dense(q, nobody, 10) == []


def test_the_exact_share_is_capped_in_rows(pg_url):
    """``dense_exact_rows`` bounds the exact scan's cost: 300 readable chunks above a cap of 100 go through the
    walk, which still returns k of them and only theirs."""
    chunks, vectors, small = _corpus()
    store = _loaded(pg_url, chunks, exact_threshold=50, dense_exact_rows=100)
    labels = frozenset({"group:small"})
    with store._tx() as cur:
        assert not store._exact_dense(cur, labels, None)
    q = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    got = [cid for cid, _ in store.rank_dense(q, labels, 10)]
    assert len(got) == 10 and all(int(cid[1:]) % 10 == 0 for cid in got)
    assert len(set(got) & set(_exact_top(vectors, small, q, 10))) >= 8
