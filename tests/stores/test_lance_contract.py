"""LanceStore passes the access-control contract every store must pass, on each of its search paths."""
from bastion.stores.lance import LanceStore
from bastion.testing.contract import AccessControlContract


def _indexed_after_each_write(store: LanceStore) -> LanceStore:
    """``store`` whose every replace is followed by ``optimize()``, so its indexes cover every row."""
    original = store.replace_documents

    def replace_and_index(doc_ids, chunks):
        original(doc_ids, chunks)
        store.optimize()

    store.replace_documents = replace_and_index
    return store


class TestLanceAccessControl(AccessControlContract):
    def make_store(self, path, embedder):
        return LanceStore(path, embedder_id=embedder.id, dimension=embedder.dimension)


class TestLanceAccessControlWithAnnIndex(AccessControlContract):
    """Same rules once an ANN index exists and small filtered sets take the exact path."""

    def make_store(self, path, embedder):
        return _indexed_after_each_write(LanceStore(path, embedder_id=embedder.id, dimension=embedder.dimension,
                                                    ann_min_rows=256, exact_threshold=5))


class TestLanceAccessControlOnTheFullTextIndex(AccessControlContract):
    """Same rules when every principal reads too much for memory (``exact_threshold=0``): BM25 from the
    full-text index, whose statistics span the whole table, so only ranks leave the store."""

    def make_store(self, path, embedder):
        return _indexed_after_each_write(LanceStore(path, embedder_id=embedder.id, dimension=embedder.dimension,
                                                    exact_threshold=0))
