"""Access-control contract suite that every chunk store runs (ours and third parties').

Subclass :class:`AccessControlContract` in a pytest module and implement ``make_store``::

    class TestMyStore(AccessControlContract):
        def make_store(self, path, embedder):
            return MyStore(path, embedder_id=embedder.id, dimension=embedder.dimension)

Every denial is paired with a positive control, so a store that denies everything fails.
"""
from __future__ import annotations

import numpy as np
import pytest

from bastion.core.types import Principal
from bastion.retrieval.analyzer import analyze
from bastion.retrieval.hybrid import HybridRetriever
from bastion.stores.protocol import StoredChunk
from bastion.testing.fakes import HashEmbedder

MODES = ("hybrid", "dense", "bm25")


def make_chunk(embedder: HashEmbedder, doc_id: str, text: str, acl: tuple[str, ...], ordinal: int = 0) -> StoredChunk:
    return StoredChunk(
        chunk_id=f"{doc_id}-{ordinal}", doc_id=doc_id, version_id=f"{doc_id}-v1", source="contract",
        document=doc_id, path=f"{doc_id}.txt", page=None, section=None, ordinal=ordinal, text=text,
        terms=" ".join(analyze(text)), char_start=0, char_end=len(text), acl=tuple(sorted(acl)),
        vector=embedder.embed_passages([text])[0],
    )


class AccessControlContract:
    """The access rules every chunk store keeps (docs/security.md), checked against a real store."""

    def make_store(self, path, embedder):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    @pytest.fixture
    def env(self, tmp_path):
        embedder = HashEmbedder(dimension=64)
        store = self.make_store(tmp_path / "store", embedder)
        return store, embedder, HybridRetriever(store, embedder.embed_query, candidates=20)

    def _docs(self, store, embedder, docs: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        chunks = [make_chunk(embedder, d, text, acl) for d, (text, acl) in docs.items()]
        store.replace_documents(list(docs), chunks)

    @staticmethod
    def _docs_seen(retriever, query, principal, mode, k=10) -> set[str]:
        return {h.doc_id for h in retriever.search(query, principal, k, mode=mode)}

    @pytest.mark.parametrize("mode", MODES)
    def test_empty_acl_denies_everyone_while_acl_owner_reads(self, env, mode):
        store, embedder, r = env
        self._docs(store, embedder, {"secret": ("merger plan codename falcon", ()),
                                     "owned": ("merger plan codename eagle", ("user:alice",))})
        alice = Principal("alice", frozenset({"board"}))
        assert self._docs_seen(r, "merger plan codename", alice, mode) == {"owned"}  # positive control
        assert "secret" not in self._docs_seen(r, "merger plan codename falcon", Principal("root", frozenset({"admin"})), mode)

    @pytest.mark.parametrize("mode", MODES)
    def test_group_member_reads_and_non_member_is_denied(self, env, mode):
        store, embedder, r = env
        self._docs(store, embedder, {"q3": ("quarterly revenue forty eight million", ("group:finance",))})
        assert self._docs_seen(r, "quarterly revenue", Principal("fay", frozenset({"finance"})), mode) == {"q3"}
        assert self._docs_seen(r, "quarterly revenue", Principal("sam", frozenset({"staff"})), mode) == set()

    @pytest.mark.parametrize("mode", MODES)
    def test_everyone_label_admits_any_user(self, env, mode):
        store, embedder, r = env
        self._docs(store, embedder, {"handbook": ("holiday calendar and office hours", ("everyone",)),
                                     "hr": ("holiday calendar for hr planning", ("group:hr",))})
        assert self._docs_seen(r, "holiday calendar", Principal("newbie"), mode) == {"handbook"}
        assert self._docs_seen(r, "holiday calendar", Principal("hana", frozenset({"hr"})), mode) == {"handbook", "hr"}

    def test_group_removal_takes_effect_on_next_query(self, env):
        store, embedder, r = env
        self._docs(store, embedder, {"pay": ("salary bands for level five", ("group:hr",))})
        before = Principal("hana", frozenset({"hr", "staff"}))
        assert self._docs_seen(r, "salary bands", before, "hybrid") == {"pay"}
        after = Principal("hana", frozenset({"staff"}))  # the catalog dropped her from hr
        assert self._docs_seen(r, "salary bands", after, "hybrid") == set()

    @pytest.mark.parametrize("mode", MODES)
    def test_near_duplicate_text_never_crosses_groups(self, env, mode):
        store, embedder, r = env
        self._docs(store, embedder, {
            "fin": ("budget 2027 total for the cost centre is EUR 12.5 million", ("group:finance",)),
            "hr": ("budget 2027 total for the cost centre is EUR 12.6 million", ("group:hr",)),
        })
        assert self._docs_seen(r, "budget 2027 total cost centre", Principal("fay", frozenset({"finance"})), mode) == {"fin"}
        assert self._docs_seen(r, "budget 2027 total cost centre", Principal("hana", frozenset({"hr"})), mode) == {"hr"}

    @pytest.mark.parametrize("mode", MODES)
    def test_selective_acl_still_returns_k_hits(self, env, mode):
        store, embedder, r = env
        rng = np.random.default_rng(7)
        words = "pump valve seal motor shaft bearing gear spindle coolant sensor".split()
        docs = {f"big{i}": (" ".join(rng.choice(words, 8)) + " maintenance", ("group:big",)) for i in range(400)}
        docs |= {f"small{i}": (" ".join(rng.choice(words, 8)) + " maintenance", ("group:small",)) for i in range(6)}
        self._docs(store, embedder, docs)
        small = self._docs_seen(r, "spindle bearing maintenance", Principal("s", frozenset({"small"})), mode, k=5)
        assert len(small) == 5 and all(d.startswith("small") for d in small)
        big = self._docs_seen(r, "spindle bearing maintenance", Principal("b", frozenset({"big"})), mode, k=10)
        assert len(big) == 10 and all(d.startswith("big") for d in big)

    def test_replacing_a_document_leaves_one_version(self, env):
        store, embedder, r = env
        self._docs(store, embedder, {"d": ("old wording of the policy", ("everyone",))})
        new = make_chunk(embedder, "d", "new wording of the policy", ("everyone",), ordinal=1)
        store.replace_documents(["d"], [new])
        texts = [h.text for h in r.search("wording policy", Principal("u"), 10)]
        assert texts == ["new wording of the policy"]

    # -- the two-step read: ranked ids, then an access-controlled fetch of the rows ----------
    def test_fetch_applies_the_acl_itself(self, env):
        store, embedder, _ = env
        self._docs(store, embedder, {"q3": ("quarterly revenue forty eight million", ("group:finance",)),
                                     "secret": ("quarterly revenue draft", ()),
                                     "mine": ("quarterly revenue notes", ("user:alice",))})
        ids = [("q3-0", 3.0), ("secret-0", 2.0), ("mine-0", 1.0)]
        fay = Principal("fay", frozenset({"finance"})).labels()
        got = store.fetch(ids, fay)
        assert [(h.row["chunk_id"], h.score) for h in got] == [("q3-0", 3.0)]  # positive control
        assert got[0].row["text"] == "quarterly revenue forty eight million" and got[0].row["doc_id"] == "q3"
        assert store.fetch(ids, Principal("sam", frozenset({"staff"})).labels()) == []  # knowing the id is not enough
        assert [h.row["chunk_id"] for h in store.fetch(ids, Principal("alice").labels())] == ["mine-0"]
        assert store.fetch(ids, Principal("root", frozenset({"admin", "finance"})).labels(), source="elsewhere") == []

    def test_fetch_keeps_the_given_order_and_drops_unknown_ids(self, env):
        store, embedder, _ = env
        self._docs(store, embedder, {f"d{i}": (f"note number {i}", ("everyone",)) for i in range(5)}
                   | {"o'brien": ("a quoted id", ("everyone",))})
        ranked = [("d3-0", 0.9), ("gone-0", 0.8), ("o'brien-0", 0.7), ("d1-0", 0.5), ("x') OR true OR ('", 0.4)]
        got = store.fetch(ranked, Principal("u").labels())
        assert [(h.row["chunk_id"], h.score) for h in got] == [("d3-0", 0.9), ("o'brien-0", 0.7), ("d1-0", 0.5)]
        assert store.fetch([], Principal("u").labels()) == []

    @pytest.mark.parametrize("leg", ("dense", "terms"))
    def test_rankings_are_acl_filtered(self, env, leg):
        store, embedder, _ = env
        self._docs(store, embedder, {"fin": ("budget total for the cost centre", ("group:finance",)),
                                     "hr": ("budget total for the cost centre", ("group:hr",))})
        query = "budget total cost centre"

        def ranked(principal):
            labels = principal.labels()
            if leg == "dense":
                return store.rank_dense(embedder.embed_query(query), labels, 10)
            return store.rank_terms(analyze(query), labels, 10)

        got = ranked(Principal("fay", frozenset({"finance"})))
        assert [cid for cid, _ in got] == ["fin-0"] and got[0][1] > 0  # positive control
        assert ranked(Principal("sam", frozenset({"staff"}))) == []

    # -- numbers shown to a principal come only from what it may read ------------------------
    @pytest.mark.parametrize("mode", MODES)
    def test_scores_do_not_change_when_chunks_the_principal_cannot_read_are_added(self, env, mode):
        """No score is computed from text the principal may not read: chunks it cannot read, full of
        the query's words, change neither its hits nor their scores (BM25 statistics included)."""
        store, embedder, r = env
        self._docs(store, embedder, {"probe": ("glossary entry quokka listed here once", ("everyone",)),
                                     "other": ("glossary entry wombat listed here twice wombat", ("everyone",))})
        bob, fay = Principal("bob", frozenset({"staff"})), Principal("fay", frozenset({"finance"}))
        queries = ("quokka", "wombat", "glossary quokka", "glossary entry")

        def seen(principal):
            return {q: [(h.chunk_id, round(h.score, 6)) for h in r.search(q, principal, 5, mode=mode)] for q in queries}

        before = seen(bob)
        assert "probe-0" in [c for c, _ in before["quokka"]]  # positive control: bob reads it
        self._docs(store, embedder, {f"secret{i}": (f"quokka programme part {i} is confidential quokka glossary",
                                                    ("group:finance",)) for i in range(6)})
        assert seen(bob) == before
        assert {h.doc_id for h in r.search("quokka programme", fay, 10, mode=mode)} >= {"secret0", "secret5"}
