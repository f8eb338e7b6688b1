"""PgVectorStore against a real PostgreSQL: filtered top-k and recall on the HNSW index, BM25 over
Chinese terms with statistics of readable chunks only, atomic replaces, embedder and server checks."""
from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from bastion.core.errors import EmbedderMismatch, StoreError
from bastion.retrieval.analyzer import analyze
from bastion.stores.postings import Postings, bm25
from bastion.stores.protocol import StoredChunk
from bastion.testing import HashEmbedder
from tests.pgvector_store.conftest import open_store

pytestmark = pytest.mark.services


def _chunk(doc: str, i: int, text: str, acl: tuple[str, ...], vector: np.ndarray, version: str = "v1") -> StoredChunk:
    return StoredChunk(chunk_id=f"{doc}-{i}", doc_id=doc, version_id=f"{doc}-{version}", source="s", document=doc,
                       path=f"{doc}.txt", page=None, section=None, ordinal=i, text=text, terms=" ".join(analyze(text)),
                       char_start=0, char_end=len(text), acl=acl, vector=vector)


class _Dim:
    id, dimension = "random-32", 32


def _random_corpus(n: int, readable_every: int, seed: int = 3) -> tuple[list[StoredChunk], np.ndarray, np.ndarray]:
    """``n`` chunks of random unit vectors; every ``readable_every``-th is the small group's, the rest the big one's."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    small = np.arange(n) % readable_every == 0
    chunks = [_chunk(f"d{i // 10}", i, f"chunk {i}", ("group:small",) if small[i] else ("group:big",), vectors[i])
              for i in range(n)]
    return chunks, vectors, small


def _load(store, chunks: list[StoredChunk], per_doc: int = 10) -> None:
    for start in range(0, len(chunks), 2000):
        batch = chunks[start:start + 2000]
        store.replace_documents(sorted({c.doc_id for c in batch}), batch)


def test_selective_acl_returns_k_hits_on_the_hnsw_index_with_high_recall(pg_url):
    """1 % of 20k chunks readable, every search through the HNSW index's iterative scan (no exact ranking
    first): each query returns k hits, and they are nearly the exact filtered top-k."""
    store = open_store(pg_url, _Dim(), ann_min_rows=1, exact_threshold=0, dense_exact_share=0, hnsw_m=8, ef_construction=32)
    chunks, vectors, small = _random_corpus(20_000, 100)
    _load(store, chunks)
    store.optimize()
    assert store._has_ann()
    rng = np.random.default_rng(11)
    queries = rng.standard_normal((30, 32)).astype(np.float32)
    ids = np.array([c.chunk_id for c in chunks])
    found = total = 0
    for q in queries:
        got = store.rank_dense(q, frozenset({"group:small"}), 10)
        assert len(got) == 10
        assert all(int(cid.split("-")[1]) % 100 == 0 for cid, _ in got)  # only the small group's chunks
        sims = vectors[small] @ (q / np.linalg.norm(q))
        exact = set(ids[small][np.argsort(-sims)[:10]])
        found += len(exact & {cid for cid, _ in got})
        total += 10
    assert found / total >= 0.9, f"recall@10 {found / total:.2f}"
    # positive control: the big group reads its own chunks, also k of them
    big = store.rank_dense(queries[0], frozenset({"group:big"}), 10)
    assert len(big) == 10 and all(int(cid.split("-")[1]) % 100 for cid, _ in big)


def test_a_walk_that_gives_up_falls_back_to_the_exact_ranking(pg_url):
    """Five readable chunks among 5k, a walk allowed only 50 tuples: the store still returns all five,
    in exact order."""
    store = open_store(pg_url, _Dim(), ann_min_rows=1, exact_threshold=0, dense_exact_share=0, max_scan_tuples=50, hnsw_m=8,
                       ef_construction=32)
    chunks, vectors, small = _random_corpus(5000, 1000)
    _load(store, chunks)
    store.optimize()
    q = np.random.default_rng(5).standard_normal(32).astype(np.float32)
    got = store.rank_dense(q, frozenset({"group:small"}), 10)
    sims = vectors[small] @ (q / np.linalg.norm(q))
    expected = [c.chunk_id for c in np.array(chunks, dtype=object)[small][np.argsort(-sims)]]
    assert [cid for cid, _ in got] == expected
    hits = store.search_dense(q, frozenset({"group:small"}), 3)
    assert [h.row["chunk_id"] for h in hits] == expected[:3] and hits[0].row["text"].startswith("chunk ")


CHINESE = {
    "leave": ("年假申请需要提前两周提交给直属经理审批", ("everyone",)),
    "travel": ("差旅报销标准：一线城市住宿每晚不超过六百元", ("everyone",)),
    "quality": ("质量检验报告每月由质检部门汇总发布", ("everyone",)),
    "contract": ("供应商合同续签须经法务部门审核", ("everyone",)),
}


def test_a_chinese_query_finds_the_right_chunk_with_the_in_memory_bm25_scores(pg_url):
    """Chinese bigrams are stored and matched unchanged; the scores equal :func:`bastion.stores.postings.bm25`
    over the same chunks (the exact path of the Lance store)."""
    emb = HashEmbedder(dimension=64)
    store = open_store(pg_url, emb)
    chunks = [_chunk(d, 0, text, acl, emb.embed_passages([text])[0]) for d, (text, acl) in CHINESE.items()]
    store.replace_documents(list(CHINESE), chunks)
    everyone = frozenset({"everyone"})
    for query, doc in (("差旅报销", "travel"), ("年假怎么申请", "leave"), ("合同审核", "contract")):
        terms = analyze(query)
        got = store.rank_terms(terms, everyone, 4)
        assert got and got[0][0] == f"{doc}-0", (query, got)
        postings = Postings.of([c.terms for c in chunks])
        ids = np.array([c.chunk_id for c in chunks], dtype=object)
        reference = bm25(terms, [(np.arange(len(chunks)), ids, np.ones(len(chunks), bool), postings)], 4)
        assert [(c, round(s, 5)) for c, s in got] == [(c, round(s, 5)) for c, s, _ in reference]
    assert store.rank_terms(analyze("差旅报销"), frozenset({"group:other"}), 4) == []  # ACL applies


def test_chunks_of_a_denied_group_move_neither_hits_nor_scores(pg_url):
    emb = HashEmbedder(dimension=64)
    store = open_store(pg_url, emb)
    public = [_chunk(d, 0, text, acl, emb.embed_passages([text])[0]) for d, (text, acl) in CHINESE.items()]
    store.replace_documents(list(CHINESE), public)
    staff = frozenset({"everyone", "group:staff"})
    queries = ["差旅报销", "质量检验", "合同审核 供应商"]
    before = {q: store.rank_terms(analyze(q), staff, 5) for q in queries}
    assert before["差旅报销"][0][0] == "travel-0"  # positive control
    secret = [_chunk(f"secret{i}", 0, f"差旅报销 机密 差旅报销 供应商 第{i}部分", ("group:finance",),
                     emb.embed_passages(["x"])[0]) for i in range(8)]
    store.replace_documents([c.doc_id for c in secret], secret)
    assert {q: store.rank_terms(analyze(q), staff, 5) for q in queries} == before
    finance = store.rank_terms(analyze("差旅报销"), frozenset({"group:finance"}), 10)
    assert {c for c, _ in finance} == {f"secret{i}-0" for i in range(8)}  # finance reads them


def test_a_replace_is_seen_whole_or_not_at_all(pg_url):
    """A reader polling while a writer swaps a document's 50 chunks between two versions sees 50 chunks of one."""
    emb = HashEmbedder(dimension=16)
    store = open_store(pg_url, emb)
    vec = emb.embed_passages(["x"])[0]
    versions = {v: [_chunk("doc", i, f"text {v} {i}", ("everyone",), vec, version=v) for i in range(50)] for v in ("a", "b")}
    store.replace_documents(["doc"], versions["a"])
    stop, seen, errors = threading.Event(), [], []

    def read():
        while not stop.is_set():
            keys = [k for k in store.chunk_keys() if k[1] == "doc"]
            seen.append((len(keys), {v for _, _, v in keys}))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(30):
            store.replace_documents(["doc"], versions["b" if round_ % 2 == 0 else "a"])
    except Exception as exc:  # noqa: BLE001 - reported below
        errors.append(exc)
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert len(seen) > 5 and all(n == 50 and len(v) == 1 for n, v in seen), [s for s in seen if s[0] != 50][:3]
    assert {next(iter(v)) for _, v in seen} == {"doc-a", "doc-b"}  # positive control: both versions were read


def test_another_embedder_is_refused(pg_url):
    store = open_store(pg_url, HashEmbedder(dimension=64))
    store.close()
    assert open_store(pg_url, HashEmbedder(dimension=64)).count() == 0  # the same embedder opens it
    with pytest.raises(EmbedderMismatch, match="hash-32.*bastion rebuild"):
        open_store(pg_url, HashEmbedder(dimension=32))


def test_a_user_who_may_not_create_the_extension_is_told_the_fix(pg_server, pg_url):
    """A fresh database owned by an ordinary role: pgvector is not a trusted extension, so the store says
    who must run CREATE EXTENSION; once it is there, the same role opens the store."""
    pg_server.psql("CREATE ROLE plain LOGIN; CREATE DATABASE plaindb OWNER plain;")
    url = make_url(pg_url).set(username="plain", database="plaindb").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="CREATE EXTENSION vector"):
        open_store(url, HashEmbedder(dimension=8))
    admin = make_url(url).set(drivername="postgresql", username="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    assert open_store(url, HashEmbedder(dimension=8)).count() == 0


def test_a_failed_index_build_is_rebuilt_and_a_second_store_opens_during_a_build(pg_url):
    """A CREATE INDEX CONCURRENTLY that was cancelled leaves an INVALID index of the same name: dense search
    must not stay exact for good. The next optimize drops and rebuilds it; a store opened meanwhile by another
    process runs no DDL that could deadlock with a build."""
    store = open_store(pg_url, _Dim(), ann_min_rows=1, exact_threshold=0, hnsw_m=8, ef_construction=32)
    chunks, vectors, _ = _random_corpus(3_000, 10)
    _load(store, chunks)
    url = make_url(pg_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("SET statement_timeout = '5ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("CREATE INDEX CONCURRENTLY bastion_chunks_embedding ON bastion_chunks "
                         "USING hnsw (embedding vector_cosine_ops) WITH (m = 8, ef_construction = 400)")
        conn.execute("RESET statement_timeout")
        valid = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                             "WHERE c.relname = 'bastion_chunks_embedding'").fetchone()
        assert valid == (False,)  # the state a failed build leaves
        second = open_store(pg_url, _Dim(), ann_min_rows=1, exact_threshold=0)  # opens without DDL
        assert second.count() == len(chunks)
        second.close()
    assert not store._has_ann()
    store.optimize()
    assert store._has_ann()  # rebuilt, valid
    hits = store.rank_dense(vectors[0], frozenset({"group:big", "group:small"}), 10)
    assert hits[0].chunk_id == chunks[0].chunk_id  # the index finds the query's own chunk first
    store.close()


class _Wide:
    id, dimension = "random-384", 384


def test_vectors_stay_in_their_rows_and_an_older_store_is_switched_on_open(pg_url):
    """A long chunk's 384-dimension vector is kept in its row, not moved to the TOAST table (where every exact
    ranking would read it through another index); a store created with pgvector's default storage is switched
    when opened, so its new rows are kept inline too. Queries still find the chunks (positive control)."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((4, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # text that does not compress, long enough for the row to pass PostgreSQL's 2 kB threshold
    long_text = " ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 7)) for _ in range(150))
    store = open_store(pg_url, _Wide())
    store.replace_documents(["a"], [_chunk("a", 0, long_text, ("group:x",), vectors[0])])
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        inline = "SELECT chunk_id, pg_column_toast_chunk_id(embedding) IS NULL FROM bastion_chunks ORDER BY 1"
        assert conn.execute(inline).fetchall() == [("a-0", True)]
        assert conn.execute("SHOW jit").fetchone()[0] == "on"  # the server's default; the store's sessions differ
        with store._tx() as cur:
            cur.execute("SHOW jit")
            assert cur.fetchone()[0] == "off"
        conn.execute("ALTER TABLE bastion_chunks ALTER COLUMN embedding SET STORAGE EXTERNAL")  # an older store
        store.close()
        conn.execute("INSERT INTO bastion_chunks SELECT 'b-0', 'b', 'b-v1', source, 'b', path, page, section, ordinal, "
                     "text, char_start, char_end, acl, embedding FROM bastion_chunks WHERE chunk_id = 'a-0'")
        assert conn.execute(inline).fetchall() == [("a-0", True), ("b-0", False)]  # what the old storage did
        reopened = open_store(pg_url, _Wide())
        reopened.replace_documents(["c"], [_chunk("c", 0, long_text, ("group:x",), vectors[2])])
        assert conn.execute(inline).fetchall() == [("a-0", True), ("b-0", False), ("c-0", True)]
    hits = reopened.rank_dense(vectors[2], frozenset({"group:x"}), 1)
    assert [h.chunk_id for h in hits] == ["c-0"]
    assert reopened.rank_dense(vectors[2], frozenset({"group:y"}), 1) == []
    reopened.close()
