"""``bastion key …``: API keys (stored hashed; a key is shown once)."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled

app = typer.Typer(name="key", help="API keys (stored hashed; a key is shown once).", no_args_is_help=True)


@app.command("create")
def key_create(user: Annotated[str, typer.Option("--user", help="Whose key.")],
               expires: Annotated[Optional[str], typer.Option(help="Lifetime, e.g. 30d, 12h, 2w; at most 3650d (default: none).")] = None,
               name: Annotated[Optional[str], typer.Option(help="A label, e.g. the client it is for.")] = None,
               as_json: JsonOpt = False) -> None:
    """Create an API key and print it once."""
    from bastion.accounts import parse_lifetime

    with friendly_errors():
        ws = open_ws()
        acc = ws.accounts
        key_id, key = acc.create_key(user, name=name, expires_in=parse_lifetime(expires) if expires else None,
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

@app.command("list")
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

@app.command("revoke")
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
