"""The sources of a workspace, kept in the catalog, and the connector each one needs.

A source's kind names its connector in the ``bastion.connectors`` entry-point group, so a
package can add a kind. The built-in kinds are ``folder`` and ``sql``; catalogs written before
``folder`` was the name hold ``filesystem``, which is read as ``folder``.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import SourceRow
from bastion.connectors.protocol import Connector
from bastion.core.config import IngestConfig
from bastion.core.errors import ConfigError
from bastion.core.types import parse_acl

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
CONNECTOR_GROUP = "bastion.connectors"
FOLDER = "folder"
KIND_ALIASES = {"filesystem": FOLDER}  # the folder kind's name in catalogs written before


def source_kind(kind: str) -> str:
    """The current name of a stored kind: ``"filesystem"`` -> ``"folder"``; others unchanged."""
    return KIND_ALIASES.get(kind, kind)


def is_folder(kind: str) -> bool:
    """Whether a stored kind is a folder source (either spelling)."""
    return source_kind(kind) == FOLDER


def connector_classes() -> dict[str, EntryPoint]:
    """Installed connector kinds -> their entry points (built-ins register like any package)."""
    return {ep.name: ep for ep in entry_points(group=CONNECTOR_GROUP)}


class SourceRegistry:
    """Add, list and open sources."""

    def __init__(self, catalog: Catalog, ingest: IngestConfig, cache_root: Path | None = None):
        self.catalog, self.ingest = catalog, ingest
        self.cache_root = cache_root  # connectors that declare ``cache_dir`` keep their state under it

    def _add(self, name: str, kind: str, config: dict[str, Any]) -> SourceRow:
        if not _NAME.match(name):
            raise ConfigError(f"invalid source name {name!r}: use letters, digits, '.', '_' or '-'")
        parse_acl(config.get("acl") or "")  # validate now, not at sync time
        with self.catalog.session() as s:
            if s.scalar(select(SourceRow).where(SourceRow.name == name)) is not None:
                raise ConfigError(f"a source named {name!r} already exists")
            row = SourceRow(name=name, kind=kind, config=config)
            s.add(row)
        return row

    def add_folder(self, name: str, path: str | Path, *, acl: str | None = None, include: list[str] | None = None,
                   exclude: list[str] | None = None, uploaders: str | None = None, permissions: str = "acl-files",
                   posix_other: str | None = None) -> SourceRow:
        """A folder source. ``uploaders``: principals (besides admins) whose editors may upload into it.
        ``permissions``: ``"acl-files"``, ``"posix"`` or ``"both"``; ``posix_other``: the principal
        the "other" read bit grants (see ``docs/file-permissions.md``)."""
        from bastion.connectors.filesystem import check_permissions

        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"source folder {str(path)!r} does not exist or is not a folder")
        parse_acl(uploaders or "")
        permissions, posix_other = check_permissions(permissions, posix_other)
        return self._add(name, FOLDER, {"path": str(root), "acl": acl or "", "include": include or [],
                                         "exclude": exclude or [], "uploaders": uploaders or "",
                                         "permissions": permissions, "posix_other": posix_other or ""})

    def add_sql(self, name: str, url: str, *, id_column: str, template: str, table: str | None = None,
                query: str | None = None, updated_at_column: str | None = None, acl_column: str | None = None,
                title_column: str | None = None, acl: str | None = None) -> SourceRow:
        config = {"url": url, "table": table, "query": query, "id_column": id_column, "template": template,
                  "updated_at_column": updated_at_column, "acl_column": acl_column, "title_column": title_column,
                  "acl": acl or ""}
        self._connector("sql", config)  # validates the options before anything is stored
        return self._add(name, "sql", config)

    def add_kind(self, name: str, kind: str, options: dict[str, Any], *, acl: str | None = None) -> SourceRow:
        """A source of any installed kind (``web``, ``git``, ``imap``, ``s3``, a package's own):
        the options are checked by building its connector before anything is stored."""
        kind = source_kind(kind)
        if kind in (FOLDER, "sql"):
            raise ConfigError(f"add a {kind} source with its own options (--path / --sql)")
        config = {**options, "acl": acl or ""}
        self._connector(kind, config, name)
        return self._add(name, kind, config)

    def list(self) -> list[SourceRow]:
        with self.catalog.session() as s:
            return list(s.scalars(select(SourceRow).order_by(SourceRow.name)))

    def get(self, name: str) -> SourceRow:
        with self.catalog.session() as s:
            row = s.scalar(select(SourceRow).where(SourceRow.name == name))
        if row is None:
            # never the list of sources: this message reaches members over the API, who may not see it
            raise ConfigError(f"unknown source {name!r}")
        return row

    def connector(self, row: SourceRow) -> Connector:
        return self._connector(row.kind, row.config, row.name)

    def _connector(self, kind: str, cfg: dict[str, Any], name: str | None = None) -> Connector:
        kind = source_kind(kind)
        found = connector_classes().get(kind)
        if found is None:
            raise ConfigError(f"unknown source kind {kind!r}")
        cls = found.load()
        acl = parse_acl(cfg.get("acl") or "")
        options = _BUILT_IN_OPTIONS.get(kind, _plugin_options)
        kwargs = options(cfg, self.ingest)
        if self.cache_root is not None and name and "cache_dir" not in kwargs \
                and "cache_dir" in inspect.signature(cls).parameters:  # a kind that keeps state between syncs
            kwargs["cache_dir"] = str(self.cache_root / kind / f"source-{name}")  # never "." or ".."
        connector: Connector = cls(**kwargs, default_acl=acl)
        return connector


def _folder_options(cfg: dict[str, Any], ingest: IngestConfig) -> dict[str, Any]:
    return {"root": cfg["path"], "include": cfg.get("include"), "exclude": cfg.get("exclude"),
            "max_bytes": int(ingest.max_file_mb * 2**20), "permissions": cfg.get("permissions") or "acl-files",
            "posix_other": cfg.get("posix_other") or None}


def _sql_options(cfg: dict[str, Any], ingest: IngestConfig) -> dict[str, Any]:
    return {"url": cfg["url"], "id_column": cfg["id_column"], "template": cfg["template"], "table": cfg.get("table"),
            "query": cfg.get("query"), "updated_at_column": cfg.get("updated_at_column"),
            "acl_column": cfg.get("acl_column"), "title_column": cfg.get("title_column"),
            "max_rows": ingest.max_rows_per_table}


def _plugin_options(cfg: dict[str, Any], ingest: IngestConfig) -> dict[str, Any]:
    """A package's connector is called with the source's stored options (the ACL as ``default_acl``)."""
    return {k: v for k, v in cfg.items() if k not in ("acl", "uploaders")}


# how the stored options of the built-in kinds map onto their connectors' arguments
_BUILT_IN_OPTIONS: dict[str, Callable[[dict[str, Any], IngestConfig], dict[str, Any]]] = {
    FOLDER: _folder_options, "sql": _sql_options}
