"""Examined documents waiting to be published, spooled to an anonymous temporary file."""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from bastion.connectors.protocol import SourceItem
from bastion.core.types import Chunk


@dataclass
class Pending:
    """One examined document: what publishing it writes."""

    item: SourceItem
    doc_id: str
    version_id: str
    content_hash: str
    size: int
    chunks: list[Chunk]
    title: str | None
    kind: str  # added | updated | acl_changed | rechunked
    parser: str
    pages: int
    stats: dict | None = None


class Spool:
    """Examined documents waiting to be published, kept in an anonymous temporary file."""

    def __init__(self) -> None:
        self._fh = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.documents = 0

    def add(self, p: Pending) -> None:
        i = p.item
        item = {"key": i.key, "uri": i.uri, "media_type": i.media_type, "acl": sorted(i.acl), "mtime": i.mtime,
                "size": i.size, "title": i.title}
        self._fh.write(json.dumps({"item": item, "chunks": [asdict(c) for c in p.chunks]} | {
            k: getattr(p, k) for k in ("doc_id", "version_id", "content_hash", "size", "title", "kind", "parser",
                                       "pages", "stats")}, ensure_ascii=False) + "\n")
        self.documents += 1

    def batches(self, max_chunks: int) -> Iterator[list[Pending]]:
        self._fh.seek(0)
        batch: list[Pending] = []
        n = 0
        for line in self._fh:
            d = json.loads(line)
            i = d.pop("item")
            item = SourceItem(key=i["key"], uri=i["uri"], media_type=i["media_type"], acl=frozenset(i["acl"]),
                              load=_not_kept, mtime=i["mtime"], size=i["size"], title=i["title"])
            p = Pending(item=item, chunks=[Chunk(**c) for c in d.pop("chunks")], **d)
            batch.append(p)
            n += len(p.chunks)
            if n >= max_chunks:
                yield batch
                batch, n = [], 0
        if batch:
            yield batch

    def close(self) -> None:
        self._fh.close()


def _not_kept() -> bytes:
    raise RuntimeError("a spooled document's bytes are not kept; its chunks are")
