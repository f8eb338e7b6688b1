"""Contract suite every connector runs (ours and third parties'), through a real workspace sync.

Subclass :class:`ConnectorContract` in a pytest module, provide a ``backend`` fixture (the
backing system: a folder, a web server, a repository, a mailbox, a bucket, started by the test
and torn down after it) and implement the hooks below::

    class TestMyConnector(ConnectorContract):
        per_document_acl = False  # True: put_document(acl=...) sets one document's ACL

        @pytest.fixture
        def backend(self, tmp_path):
            server = start_my_server(tmp_path)   # a real server on 127.0.0.1
            yield server
            server.stop()

        def add_source(self, ws, name, backend, acl):
            ws.sources.add_kind(name, "mykind", {"url": backend.url}, acl=acl)

        def put_document(self, backend, name, text, *, acl=None):
            backend.put(name, text)              # add, or replace with new content

        def delete_document(self, backend, name):
            backend.delete(name)

        def break_document(self, backend, name):
            backend.put_corrupt(name)            # listed, but it cannot be read or parsed

        def make_unreachable(self, backend):
            backend.stop()                       # the whole source is gone or refuses us

The documents are checked as a user meets them: the suite syncs a real :class:`Workspace` (on
the fast :class:`~bastion.testing.HashEmbedder`) and searches as ``alice`` (groups ``finance``
and ``staff``) and ``bob`` (group ``staff``). Each document's text carries a made-up code word,
so a hit is recognised by its text, whatever key the connector gives it. Every denial is paired
with a positive control, so a connector that hides everything fails.

A suite keeps each source to at most four documents, under the monitor's quarantine threshold,
so a deletion is published rather than held for review.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bastion.connectors.protocol import Connector, SourceItem
from bastion.core.errors import IngestError
from bastion.ingest.report import SyncReport
from bastion.testing.fakes import HashEmbedder
from bastion.workspace import Workspace

SOURCE = "contract"
RESTRICTED_ACL = "group:finance"  # the only ACL the suite asks a document or a source to carry

_WORDS = {"alpha": "zorbluxe", "beta": "quivanter", "gamma": "mellifrond", "delta": "tarkespin"}
_CHANGED = "plonkwhistle"


def document_text(name: str, word: str | None = None) -> str:
    """The text the suite stores under ``name``: a heading and a paragraph carrying its code word."""
    word = word or _WORDS[name]
    return (f"# {name.title()} notes\n\nThe {word} procedure of the {name} team is written down here. "
            f"Ask the {word} desk before the quarterly review.\n")


class _FailingPartWay:
    """Passes a connector's first item through, then fails as a source lost mid-scan does."""

    def __init__(self, inner: Connector):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def scan(self) -> Iterator[SourceItem]:
        for item in self.inner.scan():
            yield item
            raise IngestError("the source stopped answering part-way through the listing")


class _CountingConnector:
    """Passes a connector's items through, counting every ``load()`` the pipeline makes."""

    def __init__(self, inner: Connector, loads: list[str]):
        self.inner, self.loads = inner, loads

    def __getattr__(self, name: str) -> Any:  # observed_schema and the like
        return getattr(self.inner, name)

    def scan(self) -> Iterator[SourceItem]:
        for item in self.inner.scan():
            yield dataclasses.replace(item, load=self._counted(item.key, item.load))

    def _counted(self, key: str, load: Callable[[], bytes]) -> Callable[[], bytes]:
        def counted() -> bytes:
            self.loads.append(key)
            return load()

        return counted


class ConnectorContract:
    """What every connector keeps (docs/connectors.md), checked through a real workspace sync."""

    #: ``put_document(..., acl=RESTRICTED_ACL)`` gives that one document its own ACL.
    per_document_acl: bool = False
    #: an unchanged document is recognised from its listing (``mtime``/``size``), never re-read.
    lists_versions: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.per_document_acl:  # not collected at all for kinds whose ACL is per source
            # a None attribute is not a test to pytest (and never a skip): the class simply lacks it
            cls.test_document_acl_admits_its_principals_only = None  # type: ignore[assignment,method-assign]

    # -- hooks a subclass implements ----------------------------------------------------------
    @pytest.fixture
    def backend(self) -> Any:  # pragma: no cover - provided by subclasses
        raise NotImplementedError("provide a `backend` fixture: the backing system of a fresh source")

    def add_source(self, ws: Workspace, name: str, backend: Any, acl: str) -> None:  # pragma: no cover
        """Register a source named ``name`` over ``backend`` in ``ws`` with the default ACL ``acl``."""
        raise NotImplementedError

    def put_document(self, backend: Any, name: str, text: str, *, acl: str | None = None) -> None:  # pragma: no cover
        """Add the document ``name`` with ``text``, or replace its content. ``acl`` (only when
        :attr:`per_document_acl`): the document's own ACL instead of the source's."""
        raise NotImplementedError

    def delete_document(self, backend: Any, name: str) -> None:  # pragma: no cover
        """Remove the document ``name`` from the backing system."""
        raise NotImplementedError

    def break_document(self, backend: Any, name: str) -> None:  # pragma: no cover
        """Add a document ``name`` the source lists but that cannot be indexed (unreadable,
        corrupt, refused by the server); the rest of the source stays good."""
        raise NotImplementedError

    def make_unreachable(self, backend: Any) -> None:  # pragma: no cover
        """Make the whole source unreachable (server stopped, location gone)."""
        raise NotImplementedError

    # -- fixtures and helpers ------------------------------------------------------------------
    @pytest.fixture
    def ws(self, tmp_path) -> Iterator[Workspace]:
        Workspace.init(tmp_path / "contract-ws")
        ws = Workspace.open(tmp_path / "contract-ws", embedder=HashEmbedder())
        ws.directory.add_user("alice", groups=["finance", "staff"])
        ws.directory.add_user("bob", groups=["staff"])
        yield ws
        ws.close()

    def _put(self, backend: Any, *names: str) -> None:
        for name in names:
            self.put_document(backend, name, document_text(name))

    @staticmethod
    def sync(ws: Workspace) -> SyncReport:
        [report] = ws.sync(SOURCE)
        assert report.status == "completed", report.to_dict()
        return report

    @staticmethod
    def found(ws: Workspace, word: str, user: str) -> int:
        """How many hits ``user`` gets whose text carries ``word``."""
        return sum(word in h.text for h in ws.search(word, ws.principal(user), 10))

    @staticmethod
    def scan(ws: Workspace) -> list[SourceItem]:
        """One scan by a connector freshly built from the stored source."""
        return list(ws.sources.connector(ws.sources.get(SOURCE)).scan())

    # -- (a) listing -----------------------------------------------------------------------------
    def test_keys_are_unique_and_stable_across_scans(self, ws, backend):
        self._put(backend, "alpha", "beta", "gamma")
        self.add_source(ws, SOURCE, backend, "everyone")
        first = [i for i in self.scan(ws) if not i.skipped]
        again = [i for i in self.scan(ws) if not i.skipped]
        keys = [i.key for i in first]
        assert len(keys) == 3 and len(set(keys)) == 3, keys
        assert sorted(keys) == sorted(i.key for i in again)
        for item in first:
            assert item.key and item.uri and item.media_type and item.error is None, item
            assert isinstance(item.acl, frozenset) and item.acl == frozenset({"everyone"})
            assert any(word in item.load().decode("utf-8", "replace") for word in _WORDS.values()), item

    # -- (b) incremental -------------------------------------------------------------------------
    def test_unchanged_resync_reads_and_embeds_nothing(self, ws, backend, monkeypatch):
        self._put(backend, "alpha", "beta", "gamma")
        self.add_source(ws, SOURCE, backend, "everyone")
        first = self.sync(ws)
        assert (first.documents_added, first.documents_failed, first.errors) == (3, 0, [])
        assert first.chunks_embedded > 0
        loads: list[str] = []
        build = ws.sources.connector
        monkeypatch.setattr(ws.sources, "connector", lambda row: _CountingConnector(build(row), loads))
        calls = ws.embedder.calls
        again = self.sync(ws)
        assert again.documents_unchanged == 3
        assert (again.documents_added, again.documents_updated, again.documents_deleted,
                again.documents_failed, again.chunks_embedded, again.chunks_written) == (0, 0, 0, 0, 0, 0)
        assert ws.embedder.calls == calls
        if self.lists_versions:
            assert loads == [], f"unchanged documents were read again: {loads}"
        assert self.found(ws, _WORDS["beta"], "bob") == 1

    # -- (c) change ------------------------------------------------------------------------------
    def test_changed_document_replaces_its_old_version(self, ws, backend):
        self._put(backend, "alpha", "beta")
        self.add_source(ws, SOURCE, backend, "everyone")
        self.sync(ws)
        assert self.found(ws, _WORDS["alpha"], "bob") == 1
        self.put_document(backend, "alpha", document_text("alpha", _CHANGED) + "A second paragraph was added.\n")
        report = self.sync(ws)
        assert (report.documents_updated, report.documents_added, report.documents_unchanged) == (1, 0, 1)
        assert self.found(ws, _CHANGED, "bob") == 1
        assert self.found(ws, _WORDS["alpha"], "bob") == 0  # the old version is gone
        hits = [h for h in ws.search(_CHANGED, ws.principal("bob"), 10) if _CHANGED in h.text]
        assert len({h.version_id for h in hits}) == 1

    # -- (d) deletion ----------------------------------------------------------------------------
    def test_deleted_document_disappears_from_search(self, ws, backend):
        self._put(backend, "alpha", "beta", "gamma")
        self.add_source(ws, SOURCE, backend, "everyone")
        self.sync(ws)
        assert self.found(ws, _WORDS["beta"], "bob") == 1
        self.delete_document(backend, "beta")
        report = self.sync(ws)
        assert (report.documents_deleted, report.documents_unchanged) == (1, 2)
        assert self.found(ws, _WORDS["beta"], "alice") == 0
        assert self.found(ws, _WORDS["alpha"], "bob") == 1  # positive control: the rest stays

    # -- (e) access control ----------------------------------------------------------------------
    def test_source_acl_admits_its_principals_only(self, ws, backend):
        self._put(backend, "alpha", "beta")
        self.add_source(ws, SOURCE, backend, RESTRICTED_ACL)
        self.sync(ws)
        assert self.found(ws, _WORDS["alpha"], "alice") == 1  # positive control: finance reads it
        assert self.found(ws, _WORDS["alpha"], "bob") == 0
        assert self.found(ws, _WORDS["beta"], "bob") == 0

    def test_document_acl_admits_its_principals_only(self, ws, backend):
        self._put(backend, "alpha")
        self.put_document(backend, "delta", document_text("delta"), acl=RESTRICTED_ACL)
        self.add_source(ws, SOURCE, backend, "everyone")
        self.sync(ws)
        assert self.found(ws, _WORDS["delta"], "alice") == 1  # positive control: finance reads it
        assert self.found(ws, _WORDS["delta"], "bob") == 0
        assert self.found(ws, _WORDS["alpha"], "bob") == 1  # the source's own ACL still applies

    # -- (f) one bad document --------------------------------------------------------------------
    def test_bad_document_is_reported_while_the_rest_is_indexed(self, ws, backend):
        self._put(backend, "alpha", "beta")
        self.break_document(backend, "gamma")
        self.add_source(ws, SOURCE, backend, "everyone")
        items = self.scan(ws)  # listing never raises for one bad item
        assert len([i for i in items if not i.skipped]) == 3
        report = self.sync(ws)
        assert (report.documents_added, report.documents_failed) == (2, 1), report.to_dict()
        [error] = report.errors
        assert error["file"] and len(str(error["reason"]).strip()) >= 10, error
        assert self.found(ws, _WORDS["alpha"], "bob") == 1 and self.found(ws, _WORDS["beta"], "bob") == 1

    # -- (g) unreachable source ------------------------------------------------------------------
    def test_unreachable_source_raises_and_keeps_the_index(self, ws, backend):
        self._put(backend, "alpha", "beta")
        self.add_source(ws, SOURCE, backend, "everyone")
        self.sync(ws)
        self.make_unreachable(backend)
        with pytest.raises(IngestError) as failure:
            ws.sync(SOURCE)
        assert len(str(failure.value).strip()) >= 10
        # a failed listing is never taken as "every document was deleted"
        assert self.found(ws, _WORDS["alpha"], "bob") == 1 and self.found(ws, _WORDS["beta"], "bob") == 1
        assert ws.index_status(SOURCE).documents == 2  # still indexed, as the catalog says

    def test_scan_failing_part_way_deletes_nothing(self, ws, backend, monkeypatch):
        self._put(backend, "alpha", "beta", "gamma")
        self.add_source(ws, SOURCE, backend, "everyone")
        self.sync(ws)
        build = ws.sources.connector
        monkeypatch.setattr(ws.sources, "connector", lambda row: _FailingPartWay(build(row)))
        with pytest.raises(IngestError, match="part-way"):
            ws.sync(SOURCE)
        assert all(self.found(ws, _WORDS[n], "bob") == 1 for n in ("alpha", "beta", "gamma"))
        monkeypatch.undo()
        assert self.sync(ws).documents_unchanged == 3  # the next complete scan finds all as they were
