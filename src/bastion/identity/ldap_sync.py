"""One directory sync from ``[directory.ldap]``: read, check it is safe, apply, record.

Each sync (not a dry run) is written to the audit log (action ``directory.sync``) and its outcome
to ``data/directory-ldap.json`` in the workspace, which ``bastion directory status`` reads.
A sync that would leave fewer than ``min_keep_fraction`` of the directory's users active (an empty
answer from a wrong ``user_base`` looks just like everyone leaving) is refused unless forced.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from bastion.catalog.models import GroupRow, UserRow
from bastion.identity.ldap import DirectoryError, SyncRefused, read_directory
from bastion.identity.reconcile import Plan, RoleGroups, apply, plan

if TYPE_CHECKING:
    from bastion.core.config import LdapDirectoryConfig
    from bastion.workspace import Workspace

STATUS_FILE = "directory-ldap.json"
MAX_LISTED = 500  # changes listed one by one in a result (all are counted)


def ldap_config(ws: Workspace) -> LdapDirectoryConfig:
    cfg = ws.config.directory.ldap
    if cfg is None:
        raise DirectoryError(f"no [directory.ldap] section in {ws.home / 'bastion.toml'}; see docs/directory.md")
    return cfg


def role_groups(cfg: LdapDirectoryConfig) -> RoleGroups | None:
    """The role mapping of ``admin_groups`` / ``editor_groups`` (None: neither is set; roles stay as they are)."""
    if not (cfg.admin_groups or cfg.editor_groups):
        return None
    return RoleGroups(admin=frozenset(cfg.admin_groups), editor=frozenset(cfg.editor_groups))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def refusal(p: Plan, cfg: LdapDirectoryConfig) -> str | None:
    """Why applying ``p`` would be unsafe without --force (None: it is safe)."""
    before, after = p.managed_before, p.active_after
    where = f"user_base {cfg.user_base!r} with user_filter {cfg.user_filter!r}"
    if before and not p.snapshot.users:
        return (f"the directory returned no users for {where}; applying that would disable or delete all "
                f"{before} users that came from it. Check user_base and user_filter; if everyone really left, "
                "run again with --force")
    if before and after < cfg.min_keep_fraction * before:
        return (f"only {after} of the {before} active users from the directory would stay active (fewer than "
                f"min_keep_fraction = {cfg.min_keep_fraction:g}) for {where}. Check the directory settings; "
                "if this is right, run again with --force")
    return None


def sync_ldap(ws: Workspace, *, dry_run: bool = False, force: bool = False, actor: str = "system",
              via: str = "cli") -> dict[str, Any]:
    """Sync users and groups from ``[directory.ldap]``; returns the result (also for a dry run).

    Raises:
        DirectoryError: the directory cannot be read (the message names the server and why).
        SyncRefused: too many users would go at once (see :func:`refusal`); nothing was changed.
    """
    cfg = ldap_config(ws)
    started = _now()
    result: dict[str, Any] = {"started_at": started, "dry_run": dry_run, "forced": force, "server": None}
    try:
        with _one_at_a_time(ws):
            snap, result["server"] = read_directory(cfg, ws.home)
            p = plan(ws.catalog, snap, cfg.remove, role_groups(cfg))
            result.update(_describe(p))
            why = refusal(p, cfg)
            if why and not force:
                result["refused"] = why
                if not dry_run:
                    raise SyncRefused(f"directory sync refused: {why}")
            elif not dry_run:
                apply(ws.directory, p)
    except DirectoryError as exc:
        result.update(outcome="refused" if isinstance(exc, SyncRefused) else "failed", error=str(exc),
                      finished_at=_now())
        if not dry_run:
            _record(ws, result, actor, via)
        raise
    result.update(outcome="ok", error=None, finished_at=_now())
    if not dry_run:
        _record(ws, result, actor, via)
    return result


def _describe(p: Plan) -> dict[str, Any]:
    snap = p.snapshot
    return {"users": len(snap.users), "disabled_in_directory": sum(1 for u in snap.users.values() if not u.active),
            "groups": len(snap.groups), "changes": p.counts(), "total_changes": len(p.changes),
            "change_list": [c.to_dict() for c in p.changes[:MAX_LISTED]], "conflicts": p.conflicts,
            "role_changes": [f"{c.target}: {c.detail}" for c in p.changes if c.kind == "user.role"][:MAX_LISTED],
            "problems": snap.problems}


def _record(ws: Workspace, result: dict[str, Any], actor: str, via: str) -> None:
    outcome = {"ok": "ok", "refused": "denied"}.get(result["outcome"], "failed")
    detail = {k: result.get(k) for k in ("users", "groups", "changes", "total_changes", "role_changes", "conflicts",
                                         "error", "forced")}
    ws.audit.record(actor=actor, via=via, action="directory.sync", outcome=outcome, target=result.get("server"),
                    detail=detail)
    path = ws.data_dir / STATUS_FILE
    previous = read_status_file(path)
    state = {"last": result, "last_success": result if result["outcome"] == "ok" else previous.get("last_success")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _one_at_a_time(ws: Workspace) -> Iterator[None]:
    path = ws.data_dir / "directory-ldap.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryError("another directory sync of this workspace is running; try again when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_status_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def directory_status(ws: Workspace) -> dict[str, Any]:
    """The configuration in short, the last sync and the last successful one, and what the catalog holds."""
    cfg = ws.config.directory.ldap
    state = read_status_file(ws.data_dir / STATUS_FILE)
    with ws.catalog.session() as s:
        active = s.scalar(select(func.count()).select_from(UserRow).where(UserRow.origin == "ldap", UserRow.active.is_(True)))
        inactive = s.scalar(select(func.count()).select_from(UserRow).where(UserRow.origin == "ldap", UserRow.active.is_(False)))
        groups = s.scalar(select(func.count()).select_from(GroupRow).where(GroupRow.origin == "ldap"))
    return {"configured": cfg is not None, "servers": cfg.url if cfg else [], "interval": cfg.interval if cfg else None,
            "remove": cfg.remove if cfg else None, "last": state.get("last"), "last_success": state.get("last_success"),
            "catalog": {"active_users": active or 0, "disabled_users": inactive or 0, "groups": groups or 0}}
