"""``bastion user …`` and ``bastion group …``: who may read what."""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, csv_list, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled
from bastion.core.errors import AccessError

if TYPE_CHECKING:
    from bastion.core.types import Principal
    from bastion.workspace import Workspace

user_app = typer.Typer(name="user", help="Users and their groups.", no_args_is_help=True)
group_app = typer.Typer(name="group", help="Groups.", no_args_is_help=True)
app = typer.Typer()
app.add_typer(user_app)
app.add_typer(group_app)


@user_app.command("add")
def user_add(user_id: str, groups: Annotated[str, typer.Option(help="Comma-separated group names.")] = "",
             role: Annotated[Optional[str], typer.Option(help="admin | editor | member (new users: member).")] = None,
             replace: Annotated[bool, typer.Option("--replace", help="The user exists: replace their groups with "
                                                                     "--groups (and their role, if --role is given).")] = False,
             as_json: JsonOpt = False) -> None:
    """Add a user. An existing user is refused unless --replace (which replaces all their groups).

    A group not seen before is created, and said so (with the closest existing name, for a typo)."""
    with friendly_errors():
        ws = open_ws()
        wanted = csv_list(groups)
        before = _existing(ws, user_id)
        if before is not None and not replace:
            raise AccessError(f"user {user_id!r} already exists (groups: {', '.join(sorted(before.groups)) or 'none'}); "
                              f"to replace their groups with {', '.join(wanted) or 'none'}, add --replace")
        known = set(ws.directory.groups())
        p = ws.directory.add_user(user_id, wanted, role=role)
        created = sorted(set(wanted) - known)
        cli_audit(ws, "user.add", user_id, {"groups": wanted, "role": role, "replaced": before is not None,
                                            "new_groups": created})
        role = ws.accounts.role(user_id)
    if as_json:
        emit_json({"user": p.user_id, "groups": sorted(p.groups), "role": role, "new_groups": created,
                   "replaced_groups": sorted(before.groups) if before is not None else None})
        return
    for g in created:
        close = difflib.get_close_matches(g, sorted(known), n=1)
        console.print(styled(("new group", "yellow"), f" {g!r} created" + (f" (did you mean {close[0]!r}?)" if close else "")))
    if before is not None:
        console.print(styled(f"replaced the groups of {user_id}: was {', '.join(sorted(before.groups)) or '(none)'}"))
    console.print(styled("user ", (p.user_id, "bold"), f" role: {role}; groups: {', '.join(sorted(p.groups)) or '(none)'}"))


def _existing(ws: Workspace, user_id: str) -> Principal | None:
    try:
        return ws.principal(user_id)
    except AccessError:
        return None


@user_app.command("passwd")
def user_passwd(user_id: str,
                password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False) -> None:
    """Set a user's password for the web UI (argon2id hash; asked twice unless --password-stdin).

    Ends the user's web sessions: whoever was logged in logs in again with the new password."""
    import sys

    with friendly_errors():
        ws = open_ws()
        ws.principal(user_id)  # an unknown user is said before a password is asked for
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
        ended = ws.accounts.set_password(user_id, password)
        cli_audit(ws, "user.password", user_id, {"sessions_ended": ended})
    console.print(styled(f"password set for {user_id}; {ended} web session(s) ended"))


@user_app.command("logout")
def user_logout(user_id: str, as_json: JsonOpt = False) -> None:
    """Log a user out everywhere: end all their web sessions (API keys stay valid; revoke them apart)."""
    with friendly_errors():
        ws = open_ws()
        ended = ws.accounts.end_sessions(user_id)
        cli_audit(ws, "user.sessions.end", user_id, {"sessions_ended": ended})
    if as_json:
        emit_json({"user": user_id, "sessions_ended": ended})
    else:
        console.print(styled(f"ended {ended} web session(s) of {user_id}"))


@user_app.command("remove")
def user_remove(user_id: str) -> None:
    """Remove a user; their next query is refused."""
    with friendly_errors():
        ws = open_ws()
        ws.directory.remove_user(user_id)
        cli_audit(ws, "user.remove", user_id, {})
    console.print(styled(f"removed user {user_id}"))


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users and their groups."""
    with friendly_errors():
        ws = open_ws()
        users = ws.directory.users()
        roles = ws.accounts.roles()
    if as_json:
        emit_json([{"user": u.user_id, "groups": sorted(u.groups), "role": roles.get(u.user_id, "member")} for u in users])
        return
    table = Table("user", "role", "groups")
    for u in users:
        table.add_row(u.user_id, roles.get(u.user_id, "member"), ", ".join(sorted(u.groups)))
    console.print(table)


@group_app.command("list")
def group_list(as_json: JsonOpt = False) -> None:
    """List groups and their members."""
    with friendly_errors():
        groups = open_ws().directory.groups()
    if as_json:
        emit_json(groups)
        return
    table = Table("group", "members")
    for g, members in groups.items():
        table.add_row(g, ", ".join(members))
    console.print(table)
