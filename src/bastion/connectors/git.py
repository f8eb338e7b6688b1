"""A Git repository: the documentation files at one branch or tag.

The connector keeps a bare copy of the repository in its cache folder and fetches one ref into
it at every scan (``+ref``: a force-push that rewrote history is followed, not refused). It lists
the files of that commit's tree that match ``include`` (default ``*.md``, ``*.rst``, ``*.txt``
and everything under ``docs/``) and not ``exclude``, of a type the parsers read (``.rst`` is read
as plain text). A document's key is its path; its metadata holds the commit and the blob id.

Incremental: an item's ``mtime`` is the commit time of the last commit that changed the file
(plus a fraction of a second taken from its blob id, so two versions committed in the same
second still differ), and ``size`` is the blob's size; a file whose blob did not change keeps
both, so the pipeline skips it without reading it.

Why the ``git`` program rather than a Python library (dulwich): it is what users already run and
configure, so every transport works as they expect (HTTPS with their credential helper, SSH with
their keys and ``known_hosts``), and it is the reference implementation of the protocol. It is
run with hooks disabled (``core.hooksPath=/dev/null``, an empty template), without a terminal
to prompt on (``GIT_TERMINAL_PROMPT=0``, a session of its own for ssh), and with only the ``https``, ``http``, ``ssh``, ``git`` and ``file`` transports allowed:
``ext::`` and other remote helpers, which run commands, are refused before git is started and by
git itself. Submodules are not fetched. The whole scan fails with :class:`IngestError` (and
nothing indexed is changed) when the repository cannot be fetched or the ref does not exist.

The original of a document is the file's blob at the commit the last sync fetched (the one indexed),
read from the cache copy without the network; only when there is no cache copy yet is the ref
fetched first (and then the file is as the ref has it now).

>>> GitConnector(url="https://git.example.org/handbook.git", ref="main",
...              default_acl=frozenset({"group:staff"})).include
['*.md', '*.rst', '*.txt', 'docs/**']
"""
from __future__ import annotations

import fnmatch
import functools
import mimetypes
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.connectors._options import checked, comma_list
from bastion.connectors.protocol import Original, SourceItem
from bastion.core.errors import ConfigError, IngestError
from bastion.parsing import SUPPORTED

DEFAULT_INCLUDE = ["*.md", "*.rst", "*.txt", "docs/**"]
TARGET = "refs/bastion/target"
_MEDIA = {"rst": "txt"}  # read as plain text
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.\-]+@[A-Za-z0-9_.\-]+:[^:]")
_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "protocol.allow=never",
         *(x for p in ("https", "http", "ssh", "git", "file") for x in ("-c", f"protocol.{p}.allow=always")),
         "-c", "submodule.recurse=false", "-c", "fetch.recurseSubmodules=false", "-c", "core.fsmonitor=false")


class GitOptions(BaseModel):
    """The options of a ``git`` source (``bastion source add NAME --kind git -o url=...``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1)  # https://, ssh://, git://, file://, user@host:path, or a local path
    ref: str | None = None  # a branch or tag; default: the repository's default branch (its HEAD)
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    max_bytes: int = Field(default=50 * 2**20, ge=1)
    timeout: float = Field(default=600.0, gt=0, le=7200)  # seconds for one fetch

    _split = field_validator("include", "exclude", mode="before")(comma_list)


def checked_url(url: str) -> str:
    """The URL git may fetch from, or :class:`ConfigError`: only https, http, ssh, git and file
    transports (and ``user@host:path``, local paths); never a remote helper such as ``ext::``."""
    if url.startswith("-") or "::" in url or any(c in url for c in "\n\r\0"):
        raise ConfigError(f"git source: {url!r} is refused: remote helpers ('ext::', 'fd::' ...) and option-like "
                          "URLs can run commands; use an https://, ssh://, git:// or file:// URL")
    if url.lower().startswith(_SCHEMES) or _SCP_LIKE.match(url):
        return url
    if "://" in url:
        raise ConfigError(f"git source: transport of {url!r} is not allowed; use https, http, ssh, git or file")
    return str(Path(url).expanduser().resolve())  # a local repository


def _matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p) for p in patterns)


class GitConnector:
    """List the documentation files of one ref of a Git repository (see the module's description)."""

    def __init__(self, *, default_acl: frozenset[str], cache_dir: str | None = None, **options: Any):
        self.options = o = checked(GitOptions, "git", options)
        self.url = checked_url(o.url)
        if o.ref is not None and (not o.ref or o.ref.startswith("-") or ":" in o.ref or any(c.isspace() for c in o.ref)):
            raise ConfigError(f"git source: ref {o.ref!r} is not a branch or tag name")
        self.include, self.exclude = o.include or list(DEFAULT_INCLUDE), o.exclude
        self.default_acl = default_acl
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cache_dir is None:  # no workspace to keep the copy in: each new connector fetches it whole
            self._tmp = tempfile.TemporaryDirectory(prefix="bastion-git-")
            cache_dir = self._tmp.name
        self.repo = Path(cache_dir) / "repo.git"

    # -- git -------------------------------------------------------------------------------------
    @staticmethod
    def _env() -> dict[str, str]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_PROTOCOL_FROM_USER": "0"}
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
            env.pop(name, None)  # the caller's repository is not ours
        return env

    def _git(self, *args: str, timeout: float | None = None) -> bytes:
        env = self._env()
        # a new session has no terminal: ssh cannot stop to ask for a passphrase or a host key
        done = subprocess.run(["git", *_SAFE, "-C", str(self.repo), *args], capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, start_new_session=True,
                              timeout=timeout or self.options.timeout, check=False)
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OSError(f"git {args[0]} failed: {' / '.join(message[-3:]) or f'exit status {done.returncode}'}")
        return done.stdout

    def _fetch(self) -> str:
        """Fetch the ref into the cache; returns the commit id."""
        ref = self.options.ref or "HEAD"
        try:
            if not (self.repo / "HEAD").is_file():
                self.repo.mkdir(parents=True, exist_ok=True)
                self._git("init", "--quiet", "--bare", "--template=")
            self._git("fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head",
                      "--", self.url, f"+{ref}:{TARGET}")
            return self._git("rev-parse", "--verify", f"{TARGET}^{{commit}}").decode().strip()
        except subprocess.TimeoutExpired:
            raise IngestError(f"git source {self.url!r}: fetching {ref!r} took over {self.options.timeout:.0f} s "
                              "(option timeout); nothing indexed was changed") from None
        except OSError as exc:
            raise IngestError(f"git source {self.url!r}: cannot fetch {ref!r} ({exc}); nothing indexed was changed") from None

    def _files(self) -> list[tuple[str, str, str, int]]:
        """(mode, blob id, path, size) of every file in the fetched tree."""
        out = []
        for entry in self._git("ls-tree", "-r", "-z", "--long", "--full-tree", TARGET).split(b"\0"):
            if not entry:
                continue
            meta, _, path = entry.partition(b"\t")
            mode, kind, blob, size = meta.decode().split()
            if kind == "blob":
                out.append((mode, blob, path.decode("utf-8", "surrogateescape"), int(size) if size.isdigit() else 0))
        return out

    def _changed_at(self, paths: set[str]) -> dict[str, int]:
        """Path -> commit time of the last commit that changed it, in one walk of the history that
        stops as soon as every path is placed."""
        found: dict[str, int] = {}
        if not paths:
            return found
        args = ["git", *_SAFE, "-C", str(self.repo), "log", "-z", "--name-only", "--no-renames", "--format=%x01%ct",
                TARGET, "--"]
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                              env=self._env()) as proc:
            assert proc.stdout is not None
            when, rest, first = 0, b"", False
            for block in iter(functools.partial(proc.stdout.read, 65536), b""):
                *tokens, rest = (rest + block).split(b"\0")
                for token in tokens:
                    if token.startswith(b"\x01"):
                        when, first = int(token[1:]), True
                        continue
                    if first:
                        token, first = token.removeprefix(b"\n"), False
                    path = token.decode("utf-8", "surrogateescape")
                    if path in paths and path not in found:
                        found[path] = when
                if len(found) == len(paths):
                    proc.kill()
                    break
        return found

    # -- listing ---------------------------------------------------------------------------------
    def scan(self) -> Iterator[SourceItem]:
        commit = self._fetch()
        try:
            files = [f for f in self._files() if self._wanted(f[2])]
            changed = self._changed_at({path for _, _, path, _ in files})
        except (OSError, subprocess.SubprocessError) as exc:
            raise IngestError(f"git source {self.url!r}: cannot read commit {commit[:12]} ({exc})") from None
        for mode, blob, path, size in files:
            yield self._item(commit, mode, blob, path, size, changed.get(path))

    def _wanted(self, path: str) -> bool:
        if not _matches(path, self.include) or (self.exclude and _matches(path, self.exclude)):
            return False
        suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        return _MEDIA.get(suffix, suffix) in SUPPORTED

    def _item(self, commit: str, mode: str, blob: str, path: str, size: int, when: int | None) -> SourceItem:
        suffix = path.rsplit(".", 1)[-1].lower()
        uri = f"{self.url}#{path}"
        meta = {"commit": commit, "blob": blob, "ref": self.options.ref or "HEAD"}
        if mode == "120000":
            return SourceItem(key=path, uri=uri, media_type="", acl=frozenset(), load=_never, skipped="link",
                              metadata=meta)
        error = None
        if size > self.options.max_bytes:
            error = f"file is {size} bytes, over the {self.options.max_bytes}-byte limit (option max_bytes)"
        # the last change's time, plus under a second from the blob id: another version, another mtime
        mtime = float(when or 0) + int(blob[:5], 16) / 2**20

        def load() -> bytes:
            try:
                return self._git("cat-file", "blob", blob, timeout=120)
            except subprocess.TimeoutExpired as exc:
                raise OSError(f"reading {path} at {commit[:12]} took too long") from exc

        return SourceItem(key=path, uri=uri, media_type=_MEDIA.get(suffix, suffix), acl=self.default_acl, load=load,
                          mtime=mtime, size=size, title=None, error=error, metadata=meta)

    # -- originals -------------------------------------------------------------------------------
    def original(self, key: str) -> Original | None:
        """The file ``key`` at the commit of the last sync (None if that commit has no such file)."""
        try:
            if not (self.repo / "HEAD").is_file() or not self._has_target():
                self._fetch()
            size = self._git("cat-file", "-s", f"{TARGET}:{key}", timeout=60)
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"git source {self.url!r}: reading {key!r} took too long") from exc
        except IngestError as exc:
            raise OSError(str(exc)) from exc
        except OSError:
            return None  # no such file in that commit

        def read() -> bytes:
            try:
                return self._git("cat-file", "blob", f"{TARGET}:{key}", timeout=120)
            except subprocess.TimeoutExpired as exc:
                raise OSError(f"git source {self.url!r}: reading {key!r} took too long") from exc

        name = key.rsplit("/", 1)[-1]
        return Original(name=name, media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
                        size=int(size.strip() or 0), open=read)

    def _has_target(self) -> bool:
        try:
            self._git("rev-parse", "--verify", "--quiet", f"{TARGET}^{{commit}}", timeout=60)
        except OSError:
            return False
        return True


def _never() -> bytes:
    raise OSError("a skipped item is never read")
