"""The sources of a workspace, kept in the catalog, and the connector each one needs."""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from bastion.catalog.db import Catalog
from bastion.catalog.models import SourceRow
from bastion.connectors.protocol import Connector
from bastion.core.config import IngestConfig
from bastion.core.errors import ConfigError
from bastion.core.types import parse_acl

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


class SourceRegistry:
    """Add, list and open sources."""

    def __init__(self, catalog: Catalog, ingest: IngestConfig):
        self.catalog, self.ingest = catalog, ingest

    def _add(self, name: str, kind: str, config: dict) -> SourceRow:
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
                   exclude: list[str] | None = None, uploaders: str | None = None) -> SourceRow:
        """A folder source. ``uploaders``: principals (besides admins) whose editors may upload into it."""
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"source folder {str(path)!r} does not exist or is not a folder")
        parse_acl(uploaders or "")
        return self._add(name, "filesystem", {"path": str(root), "acl": acl or "", "include": include or [],
                                              "exclude": exclude or [], "uploaders": uploaders or ""})

    def add_sql(self, name: str, url: str, *, id_column: str, template: str, table: str | None = None,
                query: str | None = None, updated_at_column: str | None = None, acl_column: str | None = None,
                title_column: str | None = None, acl: str | None = None) -> SourceRow:
        config = {"url": url, "table": table, "query": query, "id_column": id_column, "template": template,
                  "updated_at_column": updated_at_column, "acl_column": acl_column, "title_column": title_column,
                  "acl": acl or ""}
        self._connector("sql", config)  # validates the options before anything is stored
        return self._add(name, "sql", config)

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
        return self._connector(row.kind, row.config)

    def _connector(self, kind: str, cfg: dict) -> Connector:
        acl = parse_acl(cfg.get("acl") or "")
        if kind == "filesystem":
            from bastion.connectors.filesystem import FilesystemConnector

            return FilesystemConnector(cfg["path"], default_acl=acl, include=cfg.get("include"), exclude=cfg.get("exclude"),
                                       max_bytes=int(self.ingest.max_file_mb * 2**20))
        if kind == "sql":
            from bastion.connectors.sql import SqlConnector

            return SqlConnector(cfg["url"], id_column=cfg["id_column"], template=cfg["template"], default_acl=acl,
                                table=cfg.get("table"), query=cfg.get("query"), updated_at_column=cfg.get("updated_at_column"),
                                acl_column=cfg.get("acl_column"), title_column=cfg.get("title_column"),
                                max_rows=self.ingest.max_rows_per_table)
        raise ConfigError(f"unknown source kind {kind!r}")
