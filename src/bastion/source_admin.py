"""Changing and removing sources, and what their last syncs left to fix.

:func:`edit_source` changes the settings ``bastion source add`` sets (validated before anything is
stored; they apply from the next sync). :func:`remove_source` takes a source out of the index and
the catalog in one transaction when the store lives in the catalog's database, else in an order that
a crash at any point leaves retryable and never leaves a passage of it readable through the catalog:
its documents are first withdrawn in the catalog (status ``pending``, nothing seen), then deleted
from the index, then from the catalog with the source itself.
:func:`sync_health` reads each source's last sync, its errors and skipped items, and the documents
that failed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update

from bastion.catalog.db import Catalog
from bastion.catalog.models import DocumentRow, DocumentVersionRow, IngestRunRow, SourceRow, SourceSchemaRow, utc_iso
from bastion.core.errors import ConfigError
from bastion.core.types import parse_acl
from bastion.sources import FOLDER, SourceRegistry, source_kind
from bastion.stores.protocol import in_catalog_database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bastion.workspace import Workspace

FOLDER_SETTINGS = ("path", "acl", "include", "exclude", "uploaders", "permissions", "posix_other")
SQL_SETTINGS = ("url", "acl", "table", "query", "id_column", "text_template", "updated_at_column", "acl_column",
                "title_column")
NULLABLE = {"table", "query", "updated_at_column", "acl_column", "title_column"}
MASK = "***"
LIST_LIMIT = 100  # errors, skipped items and failed documents shown per source
_STORED_AS = {"text_template": "template"}
_INDEX_BATCH = 500


def settings_of(kind: str) -> tuple[str, ...]:
    """The settings that may be changed on a source of ``kind`` (a plugin kind: only its ACL)."""
    kind = source_kind(kind)
    return FOLDER_SETTINGS if kind == FOLDER else SQL_SETTINGS if kind == "sql" else ("acl",)


def edit_source(registry: SourceRegistry, name: str, changes: dict[str, Any], *, masked_url: str | None = None) -> SourceRow:
    """Change settings of source ``name``; every one is checked before any is stored.

    Args:
        registry: The workspace's sources.
        name: The source's name.
        changes: Setting -> new value (:func:`settings_of` names them; ``None`` clears the optional SQL ones).
        masked_url: The source's URL as it is shown (password masked): a ``url`` equal to it is no change.

    Returns:
        The source as stored now.
    """
    row = registry.get(name)
    allowed = settings_of(row.kind)
    for key, value in changes.items():
        if key not in allowed:
            raise ConfigError(f"setting {key!r} cannot be changed on {source_kind(row.kind)} source {name!r}; "
                              f"it has {', '.join(allowed)}")
        if value is None and key not in NULLABLE:
            raise ConfigError(f"setting {key!r} of source {name!r} cannot be null")
    changes = dict(changes)
    if changes.get("url") is not None and MASK in changes["url"]:
        if changes["url"] != masked_url:
            raise ConfigError(f"url {changes['url']!r} holds the mask {MASK!r}; send the whole URL or leave url out")
        del changes["url"]
    config = dict(row.config)
    for key, value in changes.items():
        config[_STORED_AS.get(key, key)] = value
    if "path" in changes:
        root = Path(changes["path"]).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"source folder {changes['path']!r} does not exist or is not a folder")
        config["path"] = str(root)
    parse_acl(config.get("acl") or "")
    parse_acl(config.get("uploaders") or "")
    registry.connector(SourceRow(name=row.name, kind=row.kind, config=config))  # the connector checks the rest
    with registry.catalog.session(write=True) as s:
        stored = s.get_one(SourceRow, row.id)
        stored.config = config
    return registry.get(name)


def remove_source(ws: Workspace, name: str, *, by: str) -> dict[str, Any]:
    """Remove source ``name`` and its documents from the index and the catalog (call under the sync lock).

    When the store lives in the catalog's database (pgvector beside a PostgreSQL catalog) its chunks
    and the catalog rows are deleted in one transaction; otherwise in the crash-safe order of the
    module's description (documents withdrawn, chunks deleted, rows deleted).

    Its open alerts are resolved by ``by``, and adapters trained on its documents are withdrawn.
    Lineage records and the audit log keep what answers used. Returns what was removed.
    """
    row = ws.sources.get(name)
    of_source = DocumentRow.source_id == row.id

    def forget(s: Session) -> None:
        s.execute(delete(DocumentVersionRow).where(DocumentVersionRow.document_id.in_(select(DocumentRow.id)
                                                                                       .where(of_source))))
        s.execute(delete(DocumentRow).where(of_source))
        s.execute(delete(SourceSchemaRow).where(SourceSchemaRow.source == name))
        s.execute(delete(SourceRow).where(SourceRow.id == row.id))

    store = ws.store
    together = in_catalog_database(store, ws.catalog)
    if together is not None:  # the store lives in the catalog's database: chunks and rows go in one transaction
        with ws.catalog.session(write=True) as s:
            doc_ids = list(s.scalars(select(DocumentRow.id).where(of_source)))
            for i in range(0, len(doc_ids), _INDEX_BATCH):
                together.replace_documents_in(s, doc_ids[i:i + _INDEX_BATCH], [])
            forget(s)
    else:
        with ws.catalog.session(write=True) as s:
            doc_ids = list(s.scalars(select(DocumentRow.id).where(of_source)))
            s.execute(update(DocumentRow).where(of_source).values(status="pending", current_version_id=None,
                                                                   seen_hash=None, seen_size=None, seen_mtime=None))
        for i in range(0, len(doc_ids), _INDEX_BATCH):
            store.replace_documents(doc_ids[i:i + _INDEX_BATCH], [])
        with ws.catalog.session(write=True) as s:
            forget(s)
    if doc_ids:
        store.optimize()
    for alert in ws.monitor.alerts(source=name):
        ws.monitor.resolve(alert["id"], by)
    withdrawn = ws.check_adapters()
    return {"removed": name, "kind": source_kind(row.kind), "documents": len(doc_ids),
            "index_commit": "two-step" if together is None else "one-transaction",
            "adapters_withdrawn": [w["adapter"] for w in withdrawn]}


def sync_health(catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Per source name: its last sync (status, times, counts, errors, skipped items, why it was held)
    and its documents by status, with those whose last read failed and why (at most
    :data:`LIST_LIMIT` of each list; the ``*_total`` fields count them all)."""
    out: dict[str, dict[str, Any]] = {}
    with catalog.session() as s:
        names: dict[int, str] = {i: n for i, n in s.execute(select(SourceRow.id, SourceRow.name))}
        latest = select(func.max(IngestRunRow.id)).group_by(IngestRunRow.source)
        runs = {r.source: r for r in s.scalars(select(IngestRunRow).where(IngestRunRow.id.in_(latest)))}
        for name in names.values():
            out[name] = {"last_sync": _run_dict(runs.get(name)), "documents": {}, "failed_documents": [],
                         "failed_documents_total": 0}
        counts = s.execute(select(DocumentRow.source_id, DocumentRow.status, func.count())
                           .group_by(DocumentRow.source_id, DocumentRow.status))
        for source_id, status, n in counts:
            if source_id in names and status != "deleted":
                out[names[source_id]]["documents"][status] = n
        failed = s.execute(select(DocumentRow.source_id, DocumentRow.id, DocumentRow.key, DocumentRow.status,
                                  DocumentRow.error)
                           .where(DocumentRow.error.is_not(None), DocumentRow.status != "deleted")
                           .order_by(DocumentRow.key))
        for source_id, doc_id, key, status, error in failed:
            entry = out.get(names.get(source_id, ""))
            if entry is None:
                continue
            entry["failed_documents_total"] += 1
            if len(entry["failed_documents"]) < LIST_LIMIT:
                # active: an earlier version is still searchable; failed: nothing of it is
                entry["failed_documents"].append({"doc_id": doc_id, "path": key, "status": status, "reason": error})
    return out


def _run_dict(run: IngestRunRow | None) -> dict[str, Any] | None:
    if run is None:
        return None
    metrics = run.metrics or {}
    errors, skipped = list(run.errors or []), list(metrics.get("skipped") or [])
    return {"run_id": run.id, "status": run.status, "started_at": utc_iso(run.started_at),
            "finished_at": utc_iso(run.finished_at), "counts": run.counts or {},
            "errors": errors[:LIST_LIMIT], "errors_total": len(errors),
            "skipped": skipped[:LIST_LIMIT], "skipped_total": len(skipped),
            "quarantined": list(metrics.get("quarantine") or [])}


__all__ = ["FOLDER_SETTINGS", "LIST_LIMIT", "SQL_SETTINGS", "edit_source", "remove_source", "settings_of",
           "sync_health"]
