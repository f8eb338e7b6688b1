"""``bastion audit …``: the append-only audit log."""
from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.output import JsonSafeWriter, Table, console, emit_json, friendly_errors

if TYPE_CHECKING:
    from bastion.audit import AuditQuery

app = typer.Typer(name="audit", help="The append-only audit log.", no_args_is_help=True)


def _query(actor: str | None, action: str | None, outcome: str | None, since: str | None, limit: int,
           newest: bool = False) -> AuditQuery:
    from bastion.audit import AuditQuery
    from bastion.core.errors import ConfigError

    try:
        since_t = datetime.fromisoformat(since) if since else None
    except ValueError as exc:
        raise ConfigError(f"--since {since!r}: {exc}") from None
    return AuditQuery(actor=actor, action=action, outcome=outcome, since=since_t, limit=limit, newest_first=newest)


@app.command("list")
def audit_list(actor: Annotated[Optional[str], typer.Option(help="Only this user.")] = None,
               action: Annotated[Optional[str], typer.Option(help="Action, or a prefix like 'user.*'.")] = None,
               outcome: Annotated[Optional[str], typer.Option(help="ok | denied | failed | error")] = None,
               since: Annotated[Optional[str], typer.Option(help="ISO time (UTC), e.g. 2026-11-01T00:00")] = None,
               limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
               as_json: JsonOpt = False) -> None:
    """Show the most recent matching audit entries (like tail: the newest last)."""
    with friendly_errors():
        q = _query(actor, action, outcome, since, limit, newest=True)
        rows = open_ws().audit.query(q)[::-1]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "at (UTC)", "actor", "via", "action", "target", "outcome")
    for r in rows:
        table.add_row(str(r["id"]), r["at"][:19], r["actor"] or "-", r["via"], r["action"], (r["target"] or "")[:60],
                      r["outcome"])
    console.print(table)

@app.command("export")
def audit_export(actor: Annotated[Optional[str], typer.Option(help="Only this user.")] = None,
                 action: Annotated[Optional[str], typer.Option(help="Action, or a prefix like 'user.*'.")] = None,
                 since: Annotated[Optional[str], typer.Option(help="ISO time (UTC)")] = None) -> None:
    """Write matching audit entries to stdout as JSON Lines."""
    with friendly_errors():
        q = _query(actor, action, None, since, 1000)
        open_ws().audit.export_jsonl(q, JsonSafeWriter(sys.stdout))
