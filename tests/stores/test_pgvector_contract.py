"""PgVectorStore passes the access-control contract every store must pass, on each of its search paths."""
import pytest

from bastion.testing.contract import AccessControlContract
from tests.pgvector_store import conftest as pg

pg_server, pg_url = pg.pg_server, pg.pg_url  # the real PostgreSQL's fixtures
open_store = pg.open_store

pytestmark = pytest.mark.services


def _indexed_after_each_write(store):
    """``store`` whose every replace is followed by ``optimize()``, so the HNSW index exists and holds every row."""
    original = store.replace_documents

    def replace_and_index(doc_ids, chunks):
        original(doc_ids, chunks)
        store.optimize()

    store.replace_documents = replace_and_index
    return store


class TestPgVectorAccessControl(AccessControlContract):
    @pytest.fixture(autouse=True)
    def _url(self, pg_url):
        self.url = pg_url

    def make_store(self, path, embedder):
        return open_store(self.url, embedder)


class TestPgVectorAccessControlOnTheHnswIndex(AccessControlContract):
    """Same rules once the HNSW index exists and every principal goes through it (no exact ranking first):
    the iterative scan must still return k hits for a small group."""

    @pytest.fixture(autouse=True)
    def _url(self, pg_url):
        self.url = pg_url

    def make_store(self, path, embedder):
        return _indexed_after_each_write(open_store(self.url, embedder, ann_min_rows=1, exact_threshold=0, dense_exact_share=0))


class TestPgVectorAccessControlFromLabelCopies(AccessControlContract):
    """Same rules when the exact ranking reads the per-label vector copies (``[store] label_vectors``)."""

    @pytest.fixture(autouse=True)
    def _url(self, pg_url):
        self.url = pg_url

    def make_store(self, path, embedder):
        return open_store(self.url, embedder, label_vectors=True)
