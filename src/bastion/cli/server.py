"""``bastion serve``, ``bastion key ...`` and ``bastion audit ...``."""
from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Optional

import typer

from bastion.cli.output import (
    JsonSafeWriter,
    Table,
    console,
    emit_json,
    friendly_errors,
    styled,
)
from bastion.core.threads import limit_math_threads

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer, open_ws, cli_audit) -> None:
    key_app = typer.Typer(help="API keys (stored hashed; a key is shown once).", no_args_is_help=True)
    audit_app = typer.Typer(help="The append-only audit log.", no_args_is_help=True)
    app.add_typer(key_app, name="key")
    app.add_typer(audit_app, name="audit")

    @app.command()
    def serve(host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: server.host).")] = None,
              port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default: server.port).")] = None) -> None:
        """Run the HTTP API, the OpenAI-compatible API and the web UI in one process."""
        import os

        # many requests share the cores: idle OpenMP threads should sleep, not spin (measured in
        # docs/benchmarks.md); set before the embedder's OpenMP runtime starts
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from bastion.server import serve as run

        with friendly_errors():
            ws = open_ws()
            # before the embedder is built: this process only embeds queries (syncs run in children,
            # which keep the configured threads unless server.sync_threads says otherwise)
            srv, emb = ws.config.server, ws.config.embedder
            srv.sync_threads = srv.sync_threads or emb.threads
            emb.threads = srv.query_threads
            limit_math_threads(srv.query_threads)
            if not ws.accounts.admins():
                console.print(styled(("no admin yet", "yellow"), ": make one with `bastion user add NAME --role admin` "
                                     "and `bastion user passwd NAME`"))
            cfg = ws.config.server
            console.print(styled(f"Bastion on http://{host or cfg.host}:{port or cfg.port}/  (API docs: /api/docs)"))
            run(ws, host, port)

    @key_app.command("create")
    def key_create(user: Annotated[str, typer.Option("--user", help="Whose key.")],
                   expires: Annotated[Optional[str], typer.Option(help="Lifetime, e.g. 30d, 12h, 2w; at most 3650d (default: none).")] = None,
                   name: Annotated[Optional[str], typer.Option(help="A label, e.g. the client it is for.")] = None,
                   as_json: JsonOpt = False) -> None:
        """Create an API key and print it once."""
        from bastion.accounts import parse_duration

        with friendly_errors():
            ws = open_ws()
            acc = ws.accounts
            key_id, key = acc.create_key(user, name=name, expires_in=parse_duration(expires) if expires else None,
                                         created_by="cli")
            cli_audit(ws, "key.create", user, {"key": key_id, "expires_in": expires})
            info = next(k for k in acc.list_keys(user) if k.id == key_id)
        if as_json:
            emit_json(info.to_dict() | {"key": key})
            return
        console.print(styled(f"API key {key_id} for ", (user, "bold"),
                             f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""))
        console.print(styled("Store it now; it is not shown again:"))
        sys.stdout.write(key + "\n")

    @key_app.command("list")
    def key_list(user: Annotated[Optional[str], typer.Option("--user", help="Only this user's keys.")] = None,
                 as_json: JsonOpt = False) -> None:
        """List API keys (never the keys themselves)."""
        with friendly_errors():
            keys = [k.to_dict() for k in open_ws().accounts.list_keys(user)]
        if as_json:
            emit_json(keys)
            return
        table = Table("id", "user", "name", "created", "expires", "last used", "state")
        for k in keys:
            state = "active" if k["active"] else ("revoked" if k["revoked_at"] else "expired")
            table.add_row(k["id"], k["user"], k["name"] or "", (k["created_at"] or "")[:16], (k["expires_at"] or "never")[:16],
                          (k["last_used_at"] or "never")[:16], state)
        console.print(table)

    @key_app.command("revoke")
    def key_revoke(key_id: str, as_json: JsonOpt = False) -> None:
        """Revoke an API key; the next request with it is refused."""
        with friendly_errors():
            ws = open_ws()
            acc = ws.accounts
            owner = acc.key_owner(key_id)
            acc.revoke_key(key_id)
            cli_audit(ws, "key.revoke", key_id, {"owner": owner})
        if as_json:
            emit_json({"revoked": key_id})
        else:
            console.print(styled(f"revoked API key {key_id} (user {owner})"))

    def _query(actor, action, outcome, since, limit, newest=False):
        from bastion.audit import AuditQuery
        from bastion.core.errors import ConfigError

        try:
            since_t = datetime.fromisoformat(since) if since else None
        except ValueError as exc:
            raise ConfigError(f"--since {since!r}: {exc}") from None
        return AuditQuery(actor=actor, action=action, outcome=outcome, since=since_t, limit=limit, newest_first=newest)

    @audit_app.command("list")
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

    @audit_app.command("export")
    def audit_export(actor: Annotated[Optional[str], typer.Option(help="Only this user.")] = None,
                     action: Annotated[Optional[str], typer.Option(help="Action, or a prefix like 'user.*'.")] = None,
                     since: Annotated[Optional[str], typer.Option(help="ISO time (UTC)")] = None) -> None:
        """Write matching audit entries to stdout as JSON Lines."""
        with friendly_errors():
            q = _query(actor, action, None, since, 1000)
            open_ws().audit.export_jsonl(q, JsonSafeWriter(sys.stdout))
