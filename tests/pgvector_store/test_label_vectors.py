"""``[store] label_vectors``: the exact ranking read from per-label half-precision copies returns the chunks
and order the full vectors give, follows every replace and delete (whichever process writes), and applies the ACL
and the source filter like every other read."""
from __future__ import annotations

import numpy as np
import pytest

from bastion.stores.pgvector_schema import LABELS
from bastion.stores.protocol import StoredChunk
from tests.pgvector_store.conftest import open_store

pytestmark = pytest.mark.services


class _Dim:
    id, dimension = "random-48", 48


def _chunk(i: int, acl: tuple[str, ...], vector: np.ndarray, source: str = "wiki", doc: str | None = None) -> StoredChunk:
    d = doc or f"d{i // 4}"
    return StoredChunk(chunk_id=f"c{i:05d}", doc_id=d, version_id=f"{d}-v1", source=source, document=d, path=f"{d}.txt",
                       page=None, section=None, ordinal=i % 4, text=f"chunk {i}", terms=f"chunk {i}", char_start=0,
                       char_end=8, acl=acl, vector=vector)


def _corpus(n: int, seed: int = 7) -> tuple[list[StoredChunk], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    acl = [("group:all", "group:small", "group:twin") if i % 20 == 0 else ("group:all", "group:mid") if i % 5 == 0
           else ("group:all",) for i in range(n)]
    return [_chunk(i, acl[i], vectors[i], "hr" if i % 40 == 0 else "wiki") for i in range(n)], vectors


def _truth(chunks: list[StoredChunk], vectors: np.ndarray, q: np.ndarray, labels: set[str], k: int,
           source: str | None = None) -> list[str]:
    ok = [i for i, c in enumerate(chunks) if labels & set(c.acl) and (source is None or c.source == source)]
    sims = vectors[ok] @ q
    return [chunks[ok[j]].chunk_id for j in np.argsort(-sims, kind="stable")[:k]]


def test_copies_rank_exactly_and_count_a_chunk_under_two_labels_once(pg_url):
    plain = open_store(pg_url, _Dim(), exact_threshold=10_000)
    chunks, vectors = _corpus(2000)
    plain.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    copies = open_store(pg_url, _Dim(), exact_threshold=10_000, label_vectors=True)  # fills the copies on open
    with copies._tx() as cur:
        cur.execute(f"SELECT count(*) FROM {LABELS}")
        assert cur.fetchone()[0] == sum(len(c.acl) for c in chunks)
    rng = np.random.default_rng(1)
    for _ in range(10):
        q = rng.standard_normal(48).astype(np.float32)
        q /= np.linalg.norm(q)
        for labels, k, source in [({"group:small"}, 10, None), ({"group:small", "group:twin"}, 10, None),
                                  ({"group:mid", "group:small"}, 25, None), ({"group:small"}, 5, "hr")]:
            want = _truth(chunks, vectors, q, labels, k, source)
            got = [h.row["chunk_id"] for h in copies.search_dense(q, frozenset(labels), k, source)]
            assert got == want == [r.chunk_id for r in plain.rank_dense(q, frozenset(labels), k, source)]
    # a label nobody's chunks carry reads nothing; the owner's label reads its chunks (positive control)
    q = vectors[0]
    assert copies.rank_dense(q, frozenset({"group:nobody"}), 5) == []
    assert copies.rank_dense(q, frozenset({"group:small"}), 1)[0].chunk_id == "c00000"
    plain.close()
    copies.close()


def test_replaces_and_deletes_keep_the_copies_in_step_whichever_store_writes(pg_url):
    copies = open_store(pg_url, _Dim(), exact_threshold=10_000, label_vectors=True)
    chunks, vectors = _corpus(400)
    copies.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    copies.optimize()
    target = vectors[0]
    assert copies.rank_dense(target, frozenset({"group:small"}), 1)[0].chunk_id == "c00000"
    # another process, opened without the setting, moves document d0 to another group: the copies follow
    writer = open_store(pg_url, _Dim(), exact_threshold=10_000)
    moved = [_chunk(9000 + j, ("group:other",), target, doc="d0") for j in range(2)]
    writer.replace_documents(["d0"], moved)
    assert "c00000" not in {r.chunk_id for r in copies.rank_dense(target, frozenset({"group:small"}), 30)}
    assert [r.chunk_id for r in copies.rank_dense(target, frozenset({"group:other"}), 5)] == ["c09000", "c09001"]
    writer.replace_documents(["d0"], [])  # deleted: gone from the copies too
    assert copies.rank_dense(target, frozenset({"group:other"}), 5) == []
    with copies._tx() as cur:
        cur.execute(f"SELECT count(*) FROM {LABELS} WHERE doc_id = 'd0'")
        assert cur.fetchone()[0] == 0
    writer.close()
    copies.close()


class _Wide:
    id, dimension = "random-1536", 1536


def test_the_copies_cost_is_counted_and_a_dimension_too_wide_for_them_is_refused_quietly(pg_url):
    # 1,536 dimensions: no btree entry holds a half-precision copy; the store opens and ranks without them
    wide = open_store(pg_url, _Wide(), label_vectors=True)
    assert not wide.label_vectors
    with wide._tx() as cur:
        cur.execute("SELECT to_regclass(%s) IS NULL", (LABELS,))
        assert cur.fetchone()[0]
    wide.drop()
    wide.close()
    plain = open_store(pg_url, _Dim(), exact_threshold=10_000)
    chunks, _ = _corpus(200)
    plain.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    before = plain.disk_bytes()
    copies = open_store(pg_url, _Dim(), exact_threshold=10_000, label_vectors=True)
    assert copies.disk_bytes() > before
    plain.close()
    copies.close()


def test_filling_waits_for_a_writer_and_defers_past_its_timeout(pg_url):
    """A store opened with the setting while a writer holds the chunks table waits for it; past
    ``fill_lock_timeout_s`` it ranks from the chunks table (same hits) and a later open fills the copies."""
    import psycopg

    from bastion.stores.pgvector import PgVectorStore

    plain = open_store(pg_url, _Dim(), exact_threshold=10_000)
    chunks, vectors = _corpus(200)
    plain.replace_documents(sorted({c.doc_id for c in chunks}), chunks)
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as writer:  # a sync mid-write: its transaction holds the chunks table
        writer.execute("DELETE FROM bastion_chunks WHERE doc_id = 'nothing'")
        PgVectorStore.fill_lock_timeout_s = 0.3
        try:
            waiting = open_store(pg_url, _Dim(), exact_threshold=10_000, label_vectors=True)
        finally:
            PgVectorStore.fill_lock_timeout_s = 5.0
        assert not waiting.label_vectors
        got = [r.chunk_id for r in waiting.rank_dense(vectors[0], frozenset({"group:small"}), 5)]
        assert got == _truth(chunks, vectors, vectors[0], {"group:small"}, 5)
    filled = open_store(pg_url, _Dim(), exact_threshold=10_000, label_vectors=True)
    assert filled.label_vectors
    assert [r.chunk_id for r in filled.rank_dense(vectors[0], frozenset({"group:small"}), 5)] == got
    for store in (plain, waiting, filled):
        store.close()
