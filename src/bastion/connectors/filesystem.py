"""Files under a folder: recursive, include/exclude globs, ``.bastion-acl`` overrides.

A ``.bastion-acl`` file (one principal per line, ``#`` comments) sets the ACL of its folder's
subtree; the nearest one wins over the source default. Symbolic links are never followed
out of the root. Files larger than the size limit are listed with an error, not read.
"""
from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from bastion.connectors.protocol import SourceItem
from bastion.core.errors import AccessError, IngestError
from bastion.core.types import parse_acl
from bastion.parsing import SUPPORTED

ACL_FILE = ".bastion-acl"


def _matches(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or PurePosixPath(rel).match(p) for p in patterns)


class FilesystemConnector:
    """List documents under ``root``.

    >>> conn = FilesystemConnector("examples/corpus", default_acl=frozenset({"everyone"}))  # doctest: +SKIP
    >>> [i.key for i in conn.scan()][:2]                                                      # doctest: +SKIP
    ['china/通知.txt', 'finance/budget_2026.csv']
    """

    def __init__(self, root: str | Path, *, default_acl: frozenset[str], include: list[str] | None = None,
                 exclude: list[str] | None = None, max_bytes: int = 50 * 2**20):
        self.root = Path(root).resolve()
        self.default_acl = default_acl
        self.include = include or []
        self.exclude = exclude or []
        self.max_bytes = max_bytes

    def _acl_for(self, folder: Path, inherited: frozenset[str] | str) -> frozenset[str] | str:
        acl_path = folder / ACL_FILE
        if not acl_path.is_file() or acl_path.is_symlink():
            return inherited
        try:
            return parse_acl(acl_path.read_text(encoding="utf-8"))
        except (AccessError, UnicodeDecodeError, OSError) as exc:
            return f"invalid {acl_path.relative_to(self.root)}: {exc}"  # fail closed for the subtree

    def scan(self) -> Iterator[SourceItem]:
        if not self.root.is_dir():
            raise IngestError(f"source folder {str(self.root)!r} does not exist or is not a folder")
        acls: dict[Path, frozenset[str] | str] = {}
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            folder = Path(dirpath)
            parent_acl = acls.get(folder.parent, self.default_acl) if folder != self.root else self.default_acl
            acl = acls[folder] = self._acl_for(folder, parent_acl)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                item = self._item(folder / name, acl)
                if item is not None:
                    yield item

    def _item(self, path: Path, acl: frozenset[str] | str) -> SourceItem | None:
        if path.name.startswith("."):
            return None
        rel = path.relative_to(self.root).as_posix()
        suffix = path.suffix.lower().lstrip(".")
        if self.include and not _matches(rel, self.include):
            return None
        if not self.include and suffix not in SUPPORTED:
            return None
        if self.exclude and _matches(rel, self.exclude):
            return None
        if path.is_symlink() and not path.resolve().is_relative_to(self.root):
            return None  # never follow a link out of the root
        try:
            st = path.stat()
        except OSError:
            return None
        error = acl if isinstance(acl, str) else None
        if error is None and st.st_size > self.max_bytes:
            error = f"file is {st.st_size / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:.0f} MiB limit (ingest.max_file_mb)"
        return SourceItem(
            key=rel, uri=str(path), media_type=suffix, acl=acl if isinstance(acl, frozenset) else frozenset(),
            load=path.read_bytes, mtime=st.st_mtime, size=st.st_size, title=path.stem, error=error,
        )
