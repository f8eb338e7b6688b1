"""Whether the index holds anything: so that "nothing found" can say the index is empty.

A search over an empty index finds nothing for anyone; saying "no results that alice may read"
then points at the ACL instead of at the missing sync. :func:`index_status` counts what the
catalog says is indexed (cheap: no model, no index file is opened).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, IngestRunRow, SourceRow


@dataclass(frozen=True)
class IndexStatus:
    """How many documents are indexed (in the sources asked about), and why none are.

    >>> IndexStatus(documents=0, sources=("docs",), synced=False).hint
    'the index is empty: nothing has been synced yet; run `bastion sync` to index the sources'
    """

    documents: int  # indexed documents, over every reader
    sources: tuple[str, ...]  # the sources asked about (all of them when none was named)
    synced: bool  # at least one of them has completed a sync
    named: bool = False  # the caller named the sources (``--source``)

    @property
    def empty(self) -> bool:
        return self.documents == 0

    @property
    def hint(self) -> str | None:
        """None when documents are indexed; else why none are and how to fill the index."""
        if not self.empty:
            return None
        where = f"source {', '.join(map(repr, self.sources))} holds no indexed documents" if self.named \
            else "the index is empty"
        if not self.sources:
            return (f"{where}: no source has been added yet; add one with `bastion source add NAME --path DIR`, "
                    "then run `bastion sync`")
        if not self.synced:
            command = f"bastion sync {self.sources[0]}" if self.named and len(self.sources) == 1 else "bastion sync"
            return f"{where}: nothing has been synced yet; run `{command}` to index the sources"
        return (f"{where}: the last sync indexed no documents (see `bastion monitor status`); "
                "add documents to the source and run `bastion sync`")


def index_status(catalog: Catalog, sources: list[str] | None = None) -> IndexStatus:
    """What the catalog says is indexed in ``sources`` (None: every source)."""
    with catalog.session() as s:
        names = list(s.scalars(select(SourceRow.name).order_by(SourceRow.name))) if sources is None else sources
        documents = s.scalar(select(func.count()).select_from(DocumentRow)
                             .join(SourceRow, SourceRow.id == DocumentRow.source_id)
                             .where(SourceRow.name.in_(names), DocumentRow.status == "active",
                                    DocumentRow.current_version_id.is_not(None))) or 0
        synced = s.scalar(select(func.count()).select_from(IngestRunRow)
                          .where(IngestRunRow.source.in_(names), IngestRunRow.status == "completed")) or 0
    return IndexStatus(documents=documents, sources=tuple(names), synced=synced > 0, named=sources is not None)
