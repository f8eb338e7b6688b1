"""``bastion directory …``: users and groups from LDAP / Active Directory (docs/directory.md)."""
from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled

directory_app = typer.Typer(name="directory", help="Users and groups from LDAP / Active Directory.",
                            no_args_is_help=True)
app = typer.Typer()
app.add_typer(directory_app)

SHOWN = 50  # changes listed one by one; more are only counted


@directory_app.command("sync")
def directory_sync(
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would change; change nothing.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Apply even a sync that would disable most users "
                                                            "(refused otherwise).")] = False,
        as_json: JsonOpt = False) -> None:
    """Sync users and groups from the directory.ldap section of bastion.toml: create, update, disable, remove, and group memberships."""
    from bastion.identity.ldap_sync import sync_ldap

    with friendly_errors():
        ws = open_ws()
        result = sync_ldap(ws, dry_run=dry_run, force=force, actor=f"cli:{getpass.getuser()}", via="cli")
    if as_json:
        emit_json(result)
        return
    _print_result(result)


def _print_result(r: dict[str, Any]) -> None:
    console.print(styled("directory ", (str(r["server"]), "bold"), f": {r['users']} users "
                         f"({r['disabled_in_directory']} disabled there), {r['groups']} groups"))
    if r["dry_run"]:
        console.print(styled(("dry run:", "yellow"), f" {r['total_changes']} change(s) would be made; nothing was changed"))
    else:
        console.print(styled(f"{r['total_changes']} change(s) made"))
    if r["changes"]:
        console.print(styled("  " + ", ".join(f"{k} {n}" for k, n in r["changes"].items())))
    if 0 < r["total_changes"] <= SHOWN:
        table = Table("change", "target", "why")
        for c in r["change_list"]:
            table.add_row(c["kind"], c["target"], c["detail"])
        console.print(table)
    for text in r["conflicts"]:
        console.print(styled(("conflict:", "yellow"), " ", text))
    for text in r["problems"]:
        console.print(styled(("skipped:", "yellow"), " ", text))
    if r.get("refused"):
        console.print(styled(("would be refused:", "bold red"), " ", r["refused"]))


@directory_app.command("status")
def directory_status_cmd(as_json: JsonOpt = False) -> None:
    """The last directory sync (when, outcome, counts, errors) and the directory users in the catalog."""
    from bastion.identity.ldap_sync import directory_status

    with friendly_errors():
        status = directory_status(open_ws())
    if as_json:
        emit_json(status)
        return
    if not status["configured"]:
        console.print(styled("no [directory.ldap] in bastion.toml (docs/directory.md)"))
    else:
        every = f"every {status['interval']}" if status["interval"] else "only when run (no interval set)"
        console.print(styled(f"LDAP {', '.join(status['servers'])}; syncs {every}; removed users: {status['remove']}"))
    c = status["catalog"]
    console.print(styled(f"in the catalog: {c['active_users']} active and {c['disabled_users']} disabled users, "
                         f"{c['groups']} groups from the directory"))
    last, ok = status["last"], status["last_success"]
    if last is None:
        console.print(styled("no sync yet: run `bastion directory sync`"))
        return
    style = "green" if last["outcome"] == "ok" else "bold red"
    console.print(styled("last sync ", (str(last.get("finished_at")), "bold"), ": ", (last["outcome"], style),
                         f"; {last.get('total_changes', 0)} change(s)" if last["outcome"] == "ok" else ""))
    if last.get("error"):
        console.print(styled(("error:", "bold red"), " ", str(last["error"])))
    if ok is not None and last["outcome"] != "ok":
        console.print(styled(f"last successful sync: {ok.get('finished_at')} ({ok.get('users')} users, "
                             f"{ok.get('groups')} groups)"))
    elif last["outcome"] == "ok":
        console.print(styled(f"  {last.get('users')} users, {last.get('groups')} groups in the directory"))
