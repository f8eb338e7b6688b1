"""Files under a folder: recursive, include/exclude globs, ``.bastion-acl`` overrides.

A ``.bastion-acl`` file (one principal per line, ``#`` comments) sets the ACL of its folder's
subtree; the nearest one wins over the source default. One that exists but cannot be used
(invalid text, unreadable, or not a regular file: a link, a folder, a pipe) withdraws its
subtree with a reported error: it fails closed, never open.

Links are never followed, neither to files nor to folders, inside the root or out of it:
each is reported as skipped (reason ``link``), and a target inside the source is indexed at
its own place under its own ACL. Files are read by walking from the root one name at a time
with ``O_NOFOLLOW`` and checked to be the very file the listing saw (device and inode), so a
file swapped for a link, or a folder swapped for a link, between listing and reading is
refused instead of read. Pipes, sockets and device files are skipped with a reason, never
opened (a pipe would block the sync), and so are links to them. Files larger than the size
limit are listed with an error, not read. Files of a type no parser reads are left out unless
an ``include`` pattern names them: then they are skipped with a reason.

``permissions`` says where a file's ACL comes from: ``"acl-files"`` (the source default and
``.bastion-acl`` files, as above), ``"posix"`` (the file system alone: owner, group, mode bits
and POSIX ACLs of the file and of every folder down to it, see :mod:`bastion.connectors.posix`)
or ``"both"`` (only principals both admit: neither can widen the other).
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from bastion.connectors.posix import Names, Permissions, PosixAclError, readers
from bastion.connectors.posix import permissions as read_permissions
from bastion.connectors.protocol import SourceItem
from bastion.core.errors import AccessError, ConfigError, IngestError
from bastion.core.types import parse_acl, parse_principal
from bastion.events import log
from bastion.parsing import SUPPORTED

ACL_FILE = ".bastion-acl"
MAX_ACL_BYTES = 64 * 1024
_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = _NOFOLLOW | os.O_NONBLOCK  # a pipe swapped in after the listing must not block the open
PERMISSIONS = ("acl-files", "posix", "both")
Chain = tuple[Permissions, ...] | str  # the permissions of the folders from the root down, or why withdrawn


def _matches(rel: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or PurePosixPath(rel).match(p) for p in patterns)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def _open_folder(root: Path, parts: tuple[str, ...], *, create: bool = False) -> int:
    """A descriptor of the folder ``root/parts...``, each folder opened relative to the previous
    one with ``O_NOFOLLOW``, so none can be a link whenever it was swapped in; ``create`` makes
    the missing ones. The caller closes it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                nxt = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                raise OSError(exc.errno, f"folder {part!r} on the way is a link or not a folder: refused") from exc
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_fd(root: Path, rel: str, *, expect: tuple[int, int] | None) -> int:
    """A descriptor of the regular file ``rel`` under ``root``, opened without following any link
    on the way (as :func:`read_beneath` does), for its permissions; the caller closes it."""
    parts = PurePosixPath(rel).parts
    fd = _open_folder(root, parts[:-1])
    try:
        file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"{rel!r} is a link or cannot be opened: refused ({exc.strerror})") from exc
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode) or (expect is not None and (st.st_dev, st.st_ino) != expect):
        os.close(file_fd)
        raise OSError(f"{rel!r} is not the regular file the listing saw: refused, read again at the next sync")
    return file_fd


def read_beneath(root: Path, rel: str, *, expect: tuple[int, int] | None = None, limit: int | None = None) -> bytes:
    """Read the regular file at ``rel`` under ``root`` without following any link on the way.

    Each folder on the path is opened relative to the previous one with ``O_NOFOLLOW``, so no
    component can be a link, whenever it was swapped in. ``expect`` (device, inode) must match
    the opened file; ``limit`` bounds how many bytes are read. Raises ``OSError`` naming what
    was refused.
    """
    parts = PurePosixPath(rel).parts
    fd = _open_folder(root, parts[:-1])
    try:
        try:
            file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise OSError(exc.errno, f"{rel!r} is a link or cannot be opened: refused ({exc.strerror})") from exc
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{rel!r} is a {_kind(st.st_mode)}, not a regular file: refused")
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            raise OSError(f"{rel!r} was replaced between listing and reading: refused, read again at the next sync")
        os.set_blocking(fh.fileno(), True)
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise OSError(f"{rel!r} is larger than {limit} bytes")
    return data


def write_beneath(root: Path, rel: str, data: BinaryIO) -> int:
    """Write ``data`` to the file ``rel`` under ``root`` atomically, never through a link.

    Folders on the way are opened (or created) one at a time with ``O_NOFOLLOW``; the bytes go
    to a new temporary file in the final folder, which then replaces the destination in one
    rename, so a sync never sees half a file and a link at the destination is refused, not
    written through. Returns the number of bytes written.
    """
    parts = PurePosixPath(rel).parts
    fd = _open_folder(root, parts[:-1], create=True)
    try:
        name = parts[-1]
        try:
            st = os.lstat(name, dir_fd=fd)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise OSError(f"{rel!r} is a {_kind(st.st_mode)}, not a regular file: refused")
        tmp = f".{name}.upload-{os.getpid()}-{secrets.token_hex(4)}"
        out_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            with os.fdopen(out_fd, "wb") as out:
                shutil.copyfileobj(data, out)
                size = out.tell()
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=fd)
            raise
        return size
    finally:
        os.close(fd)


class FilesystemConnector:
    """List documents under ``root``.

    >>> conn = FilesystemConnector("examples/corpus", default_acl=frozenset({"everyone"}))  # doctest: +SKIP
    >>> [i.key for i in conn.scan()][:2]                                                      # doctest: +SKIP
    ['china/通知.txt', 'finance/budget_2026.csv']
    """

    def __init__(self, root: str | Path, *, default_acl: frozenset[str], include: list[str] | None = None,
                 exclude: list[str] | None = None, max_bytes: int = 50 * 2**20, permissions: str = "acl-files",
                 posix_other: str | None = None):
        self.root = Path(root).resolve()
        self.default_acl = default_acl
        self.include = include or []
        self.exclude = exclude or []
        self.max_bytes = max_bytes
        self.permissions, self.posix_other = check_permissions(permissions, posix_other)
        self.unmapped: dict[str, list[str]] = {}  # file -> uids/gids without a name at the last scan

    def _acl_for(self, folder: Path, inherited: frozenset[str] | str) -> frozenset[str] | str:
        """The ACL of ``folder``'s subtree, or the reason it is withdrawn (fail closed)."""
        if isinstance(inherited, str):
            return inherited  # a withdrawn subtree stays withdrawn, whatever lies below
        acl_path = folder / ACL_FILE
        rel = acl_path.relative_to(self.root).as_posix()
        try:
            st = acl_path.lstat()
        except FileNotFoundError:
            return inherited
        except OSError as exc:
            return f"invalid {rel}: cannot inspect it ({exc.strerror}); its folder is withdrawn"
        if not stat.S_ISREG(st.st_mode):
            return f"invalid {rel}: it is a {_kind(st.st_mode)}, not a regular file; its folder is withdrawn"
        try:
            text = read_beneath(self.root, rel, expect=(st.st_dev, st.st_ino), limit=MAX_ACL_BYTES).decode("utf-8")
            return parse_acl(text)
        except (AccessError, UnicodeDecodeError, OSError) as exc:
            return f"invalid {rel}: {exc}; its folder is withdrawn"

    def folder_acl(self, rel_folder: PurePosixPath) -> frozenset[str] | str:
        """The ACL a file written into ``rel_folder`` gets at the next sync, computed from the root
        down as :meth:`scan` does, or the reason nothing may be written there (a withdrawn subtree,
        a folder on the way that is a link or not a folder). Folders not there yet inherit.

        When the file system sets the permissions, a folder has no ACL of its own (each file
        has its own, see :meth:`file_acl`): the reason is returned, so nothing is written there."""
        if self.permissions != "acl-files":
            return (f"the permissions of source folder {str(self.root)!r} come from the file system: "
                    "each file has its own, a folder has none")
        return self._files_acl(rel_folder)

    def _files_acl(self, rel_folder: PurePosixPath) -> frozenset[str] | str:
        """The ACL the source default and ``.bastion-acl`` files give ``rel_folder``."""
        folder, acl = self.root, self._acl_for(self.root, self.default_acl)
        for part in rel_folder.parts:
            folder = folder / part
            try:
                st = folder.lstat()
            except FileNotFoundError:
                return acl
            if not stat.S_ISDIR(st.st_mode):
                return f"{folder.relative_to(self.root).as_posix()!r} is a {_kind(st.st_mode)}, not a folder"
            acl = self._acl_for(folder, acl)
        return acl

    def file_acl(self, rel: PurePosixPath) -> frozenset[str] | str:
        """The ACL the file ``rel`` has now, as :meth:`scan` would compute it, or why it has none."""
        if self.permissions == "acl-files":
            return self.folder_acl(rel.parent)
        acl = self._files_acl(rel.parent) if self.permissions == "both" else frozenset()
        if isinstance(acl, str):
            return acl
        chain: Chain = ()
        for depth in range(len(rel.parts)):
            chain = self._chain(PurePosixPath(*rel.parts[:depth]), chain)
        if isinstance(chain, str):
            return chain
        try:
            fd = read_fd(self.root, rel.as_posix(), expect=None)
        except OSError as exc:
            return f"cannot read the permissions of {rel.as_posix()!r}: {exc.strerror or exc}"
        return self._posix_acl(fd, chain, acl, Names(other=self.posix_other), rel.as_posix())

    def _chain(self, rel_folder: PurePosixPath, parent: Chain) -> Chain:
        """The permissions of the folders from the root down to ``rel_folder``, or why withdrawn."""
        if isinstance(parent, str):
            return parent
        try:
            fd = _open_folder(self.root, rel_folder.parts)
        except OSError as exc:
            return f"cannot open folder {rel_folder.as_posix()!r}: {exc.strerror or exc}; its files are withdrawn"
        try:
            return (*parent, read_permissions(fd))
        except (OSError, PosixAclError) as exc:
            return f"cannot read the permissions of folder {rel_folder.as_posix()!r}: {exc}; its files are withdrawn"
        finally:
            os.close(fd)

    def _posix_acl(self, fd: int, chain: tuple[Permissions, ...], files_acl: frozenset[str], names: Names,
                   rel: str = "") -> frozenset[str] | str:
        """Who may read the open file ``fd`` (closed here) through ``chain``, met with the
        ``.bastion-acl`` ACL when both decide."""
        names.unmapped = set()
        try:
            acl = readers(chain, read_permissions(fd), names)
        except (OSError, PosixAclError) as exc:
            return f"cannot read the permissions of {rel!r}: {exc}; the file is withheld"
        finally:
            os.close(fd)
        if names.unmapped:
            self.unmapped[rel] = sorted(names.unmapped)
            log("source.posix_unmapped", root=str(self.root), file=rel, ids=sorted(names.unmapped))
        return names.meet(acl, files_acl) if self.permissions == "both" else acl

    def scan(self) -> Iterator[SourceItem]:
        if not self.root.is_dir():
            raise IngestError(f"source folder {str(self.root)!r} does not exist or is not a folder")
        acls: dict[Path, frozenset[str] | str] = {}
        chains: dict[Path, Chain] = {}
        self.unmapped, names = {}, Names(other=self.posix_other)
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            folder = Path(dirpath)
            parent_acl = acls.get(folder.parent, self.default_acl) if folder != self.root else self.default_acl
            # with "posix" the file system alone decides: .bastion-acl files are not read
            acl = acls[folder] = frozenset() if self.permissions == "posix" else self._acl_for(folder, parent_acl)
            chain: Chain = ()
            if self.permissions != "acl-files":
                rel_folder = PurePosixPath(folder.relative_to(self.root).as_posix())
                chain = chains[folder] = self._chain(rel_folder, chains.get(folder.parent, ()) if folder != self.root else ())
            visible = sorted(d for d in dirnames if not d.startswith("."))
            dirnames[:] = [d for d in visible if not (folder / d).is_symlink()]
            for name in sorted(set(visible) - set(dirnames)):  # links to folders: reported, not followed
                yield self._skipped(folder / name, "link")
            for name in sorted(filenames):
                item = self._item(folder / name, acl)
                if item is not None and self.permissions != "acl-files" and not item.skipped:
                    item = self._with_posix_acl(item, acl, chain, names)
                if item is not None:
                    yield item

    def _with_posix_acl(self, item: SourceItem, files_acl: frozenset[str] | str, chain: Chain, names: Names) -> SourceItem:
        """``item`` labelled with the readers the file system admits (and the ``.bastion-acl`` one, for ``both``)."""
        metadata = dict(item.metadata)
        identity = metadata.pop("identity", None)
        item = replace(item, metadata=metadata)
        if isinstance(files_acl, str):
            return item  # a withdrawn subtree: the item carries its error and no ACL already
        if isinstance(chain, str):
            return replace(item, acl=frozenset(), error=chain)
        try:
            fd = read_fd(self.root, item.key, expect=identity)
        except OSError as exc:
            return replace(item, acl=frozenset(), error=f"cannot read the permissions of {item.key!r}: {exc}")
        acl = self._posix_acl(fd, chain, files_acl, names, item.key)
        if isinstance(acl, str):
            return replace(item, acl=frozenset(), error=acl)
        if item.key in self.unmapped:
            metadata["posix_unmapped"] = self.unmapped[item.key]
        return replace(item, acl=acl, metadata=metadata)

    def _skipped(self, path: Path, reason: str) -> SourceItem:
        rel = path.relative_to(self.root).as_posix()
        return SourceItem(key=rel, uri=str(path), media_type="", acl=frozenset(), load=_never, skipped=reason)

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
        try:
            st = path.lstat()
        except OSError:
            return None  # gone since the listing
        if stat.S_ISLNK(st.st_mode):
            return self._skipped(path, "link")
        if not stat.S_ISREG(st.st_mode):
            return self._skipped(path, f"{_kind(st.st_mode)}, not a regular file")
        if suffix not in SUPPORTED:  # named by an include pattern
            return self._skipped(path, f"unsupported file type {suffix or '(no suffix)'!r}")
        error = acl if isinstance(acl, str) else None
        if error is None and st.st_size > self.max_bytes:
            error = f"file is {st.st_size / 2**20:.1f} MiB, over the {self.max_bytes / 2**20:.0f} MiB limit (ingest.max_file_mb)"
        root, identity = self.root, (st.st_dev, st.st_ino)
        return SourceItem(
            key=rel, uri=str(path), media_type=suffix, acl=acl if isinstance(acl, frozenset) else frozenset(),
            load=lambda: read_beneath(root, rel, expect=identity), mtime=st.st_mtime, size=st.st_size,
            title=path.stem, error=error, metadata={"identity": identity} if self.permissions != "acl-files" else {},
        )


def check_permissions(permissions: str, posix_other: str | None) -> tuple[str, str | None]:
    """Validate a folder source's ``permissions`` and ``posix_other`` options."""
    if permissions not in PERMISSIONS:
        raise ConfigError(f"invalid permissions {permissions!r}: use one of {', '.join(PERMISSIONS)}")
    if posix_other in (None, ""):
        return permissions, None
    if not isinstance(posix_other, str):
        raise ConfigError(f"invalid posix_other {posix_other!r}: give one principal, e.g. 'everyone' or 'group:staff'")
    try:
        return permissions, parse_principal(posix_other)
    except AccessError as exc:
        raise ConfigError(f"invalid posix_other: {exc}") from None


def _never() -> bytes:
    raise OSError("a skipped item is never read")
