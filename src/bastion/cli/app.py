"""``bastion`` commands. Each one opens the workspace, calls the Python API, prints."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.output import (
    Table,
    console,
    emit_json,
    error,
    friendly_errors,
    install_excepthook,
    styled,
    sync_progress,
)
from bastion.core.errors import ConfigError

app = typer.Typer(help="Bastion: company knowledge behind a local LLM, safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
user_app = typer.Typer(help="Users and their groups.", no_args_is_help=True)
group_app = typer.Typer(help="Groups.", no_args_is_help=True)
source_app = typer.Typer(help="Sources to sync (folders, SQL tables).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(source_app, name="source")

_state: dict = {"home": None}
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.callback()
def _main(home: Annotated[Optional[Path], typer.Option("--home", help="Workspace folder (default: $BASTION_HOME or .).")] = None) -> None:
    _state["home"] = home


def _ws():
    from bastion.workspace import Workspace

    return Workspace.open(_state["home"])


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@app.command()
def init(directory: Annotated[Optional[Path], typer.Argument(help="Where to create it.")] = None) -> None:
    """Create a workspace: bastion.toml plus a data folder."""
    from bastion.workspace import Workspace

    with friendly_errors():
        ws = Workspace.init(directory or _state["home"])
    console.print(styled("Created workspace at ", (str(ws.home), "bold"), f"  (config: {ws.home / 'bastion.toml'})"))


@user_app.command("add")
def user_add(user_id: str, groups: Annotated[str, typer.Option(help="Comma-separated group names.")] = "",
             role: Annotated[Optional[str], typer.Option(help="admin | editor | member (new users: member).")] = None,
             as_json: JsonOpt = False) -> None:
    """Add a user (or set an existing user's groups and role)."""
    with friendly_errors():
        ws = _ws()
        p = ws.directory.add_user(user_id, _csv(groups), role=role)
        _cli_audit(ws, "user.add", user_id, {"groups": _csv(groups), "role": role})
        role = ws.accounts.role(user_id)
    if as_json:
        emit_json({"user": p.user_id, "groups": sorted(p.groups), "role": role})
    else:
        console.print(styled("user ", (p.user_id, "bold"), f" role: {role}; groups: {', '.join(sorted(p.groups)) or '(none)'}"))


@user_app.command("passwd")
def user_passwd(user_id: str,
                password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False) -> None:
    """Set a user's password for the web UI (argon2id hash; asked twice unless --password-stdin).

    Ends the user's web sessions: whoever was logged in logs in again with the new password."""
    import sys

    with friendly_errors():
        ws = _ws()
        if password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
        ended = ws.accounts.set_password(user_id, password)
        _cli_audit(ws, "user.password", user_id, {"sessions_ended": ended})
    console.print(styled(f"password set for {user_id}; {ended} web session(s) ended"))


@user_app.command("logout")
def user_logout(user_id: str, as_json: JsonOpt = False) -> None:
    """Log a user out everywhere: end all their web sessions (API keys stay valid; revoke them apart)."""
    with friendly_errors():
        ws = _ws()
        ended = ws.accounts.end_sessions(user_id)
        _cli_audit(ws, "user.sessions.end", user_id, {"sessions_ended": ended})
    if as_json:
        emit_json({"user": user_id, "sessions_ended": ended})
    else:
        console.print(styled(f"ended {ended} web session(s) of {user_id}"))


def _cli_audit(ws, action: str, target: str | None, detail: dict) -> None:
    """Admin changes made from the CLI are audited too (actor: the operating-system user)."""
    import getpass

    ws.audit.record(actor=f"cli:{getpass.getuser()}", via="cli", action=action, outcome="ok",
                                target=target, detail=detail)


@user_app.command("remove")
def user_remove(user_id: str) -> None:
    """Remove a user; their next query is refused."""
    with friendly_errors():
        ws = _ws()
        ws.directory.remove_user(user_id)
        _cli_audit(ws, "user.remove", user_id, {})
    console.print(styled(f"removed user {user_id}"))


@user_app.command("list")
def user_list(as_json: JsonOpt = False) -> None:
    """List users and their groups."""
    with friendly_errors():
        ws = _ws()
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
        groups = _ws().directory.groups()
    if as_json:
        emit_json(groups)
        return
    table = Table("group", "members")
    for g, members in groups.items():
        table.add_row(g, ", ".join(members))
    console.print(table)


@source_app.command("add")
def source_add(
    name: str,
    path: Annotated[Optional[Path], typer.Option("--path", help="Folder to sync.")] = None,
    sql: Annotated[Optional[str], typer.Option("--sql", help="SQLAlchemy URL of a database.")] = None,
    acl: Annotated[str, typer.Option(help="Default ACL, e.g. 'group:finance,user:alice' or 'everyone'. Empty: nobody.")] = "",
    include: Annotated[str, typer.Option(help="Comma-separated globs to include (folders).")] = "",
    exclude: Annotated[str, typer.Option(help="Comma-separated globs to exclude (folders).")] = "",
    table: Annotated[Optional[str], typer.Option(help="SQL table.")] = None,
    query: Annotated[Optional[str], typer.Option(help="SQL query instead of a table.")] = None,
    id_column: Annotated[str, typer.Option(help="SQL id column.")] = "id",
    text_template: Annotated[Optional[str], typer.Option(help="Text over columns, e.g. '{title}\\n{body}'.")] = None,
    updated_at_column: Annotated[Optional[str], typer.Option(help="SQL column with the row's last change.")] = None,
    acl_column: Annotated[Optional[str], typer.Option(help="SQL column of comma-separated principals.")] = None,
    title_column: Annotated[Optional[str], typer.Option(help="SQL column used as the document title.")] = None,
    uploaders: Annotated[str, typer.Option(help="Folders: principals whose editors may upload here over the API.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add a folder (--path) or SQL (--sql) source."""
    with friendly_errors():
        if bool(path) == bool(sql):
            raise ConfigError("give exactly one of --path DIR or --sql URL")
        sources = _ws().sources
        if path:
            row = sources.add_folder(name, path, acl=acl, include=_csv(include), exclude=_csv(exclude), uploaders=uploaders)
        else:
            if not text_template:
                raise ConfigError("a SQL source needs --text-template, e.g. '{title}\\n{body}'")
            row = sources.add_sql(name, sql, id_column=id_column, template=text_template.replace("\\n", "\n"),
                                  table=table, query=query, updated_at_column=updated_at_column,
                                  acl_column=acl_column, title_column=title_column, acl=acl)
    if as_json:
        emit_json({"name": row.name, "kind": row.kind})
    else:
        console.print(styled(f"added {row.kind} source ", (row.name, "bold"), f" (default ACL: {acl or 'nobody'})"))


@source_app.command("list")
def source_list(as_json: JsonOpt = False) -> None:
    """List sources."""
    with friendly_errors():
        rows = _ws().sources.list()
    data = [{"name": r.name, "kind": r.kind, "location": r.config.get("path") or r.config.get("table") or "query",
             "acl": r.config.get("acl") or ""} for r in rows]
    if as_json:
        emit_json(data)
        return
    table = Table("name", "kind", "location", "default ACL")
    for d in data:
        table.add_row(d["name"], d["kind"], d["location"], d["acl"] or "(nobody)")
    console.print(table)


@app.command()
def sync(source: Annotated[Optional[str], typer.Argument(help="Source name (default: all).")] = None,
         as_json: JsonOpt = False,
         progress_jsonl: Annotated[bool, typer.Option("--progress-jsonl", hidden=True,
                                                      help="Progress as JSON lines on stderr (for the server).")] = False,
         nice: Annotated[int, typer.Option("--nice", min=0, max=19, help="Run at this CPU priority (nice value).")] = 0,
         accept: Annotated[bool, typer.Option("--accept", help="Publish even if the checks would quarantine "
                                                               "this sync (one named source).")] = False,
         ) -> None:
    """Bring the index up to date with the sources (incremental, crash-safe, checked before publishing).

    Exit code 3: a sync was quarantined (not published; see `bastion monitor status`)."""
    import os

    if nice:
        os.nice(nice)  # before the embedder starts its threads, which inherit it
    if accept and not source:
        error("--accept publishes one quarantined source: name it (bastion sync SOURCE --accept)")
        raise typer.Exit(2)
    with friendly_errors():
        ws = _ws()
        if progress_jsonl:
            import json
            import sys

            def progress(stage: str, advance: int, total: int | None) -> None:
                sys.stderr.write(json.dumps({"stage": stage, "advance": advance, "total": total}) + "\n")
                sys.stderr.flush()

            reports = ws.sync(source, progress=progress, accept=accept)
        else:
            with sync_progress(not as_json) as progress:
                reports = ws.sync(source, progress=progress, accept=accept)
        ws.monitor.notifier.wait(30)  # webhooks go out in the background; give them a moment before exiting
    quarantined = any(r.status == "quarantined" for r in reports)
    if as_json:
        if len(reports) == 1:
            emit_json(reports[0].to_dict())
        else:
            from bastion.ingest.report import SyncReport

            total = SyncReport(source="*")
            for r in reports:
                total.merge(r)
            emit_json(total.to_dict() | {"status": "quarantined" if quarantined else "completed",
                                         "sources": [r.to_dict() for r in reports]})
        if quarantined:
            raise typer.Exit(3)
        return
    from bastion.cli.monitor import print_alerts

    for r in reports:
        if r.status == "quarantined":
            console.print(styled((f"{r.source}: QUARANTINED", "bold red"),
                                 " — nothing was published, the previous state stays live:"))
            for why in r.quarantined:
                console.print(styled(f"  {why}"))
            console.print(styled(f"  publish it anyway with: bastion sync {r.source} --accept"))
            continue
        console.print(styled((r.source, "bold"), f": {r.documents_added} added, {r.documents_updated} updated, "
                             f"{r.documents_acl_changed} ACL changed, {r.documents_deleted} deleted, "
                             f"{r.documents_unchanged} unchanged, {r.documents_failed} failed; "
                             f"{r.chunks_embedded} chunks embedded in {r.seconds:.1f}s"))
        for e in r.errors:
            if e["file"] is None:
                console.print(styled("  ", ("warning", "yellow"), f": {e['reason']}"))
            else:
                console.print(styled("  ", ("skipped", "yellow"), f" {e['file']}: {e['reason']}"))
        for e in r.skipped:  # not documents at all: links, pipes, a SQL row repeating an id
            console.print(styled("  ", ("skipped", "yellow"), f" {e['file']}: {e['reason']}"))
    alerts = [a for r in reports for a in r.alerts]
    if alerts:
        print_alerts(alerts)
    if quarantined:
        raise typer.Exit(3)


@app.command()
def rebuild(as_json: JsonOpt = False) -> None:
    """Drop the index and rebuild it from all sources (after changing the embedder)."""
    with friendly_errors():
        ws = _ws()
        with sync_progress(not as_json) as progress:
            reports = ws.rebuild_index(progress=progress)
    if as_json:
        emit_json([r.to_dict() for r in reports])
        return
    for r in reports:
        console.print(styled((r.source, "bold"), f": {r.documents_added} re-indexed, {r.documents_failed} failed, "
                             f"{r.chunks_embedded} chunks embedded in {r.seconds:.1f}s"))


@app.command()
def search(query: str,
           as_user: Annotated[str, typer.Option("--as", help="Search as this user (required).")],
           k: Annotated[Optional[int], typer.Option("--k", min=1, max=1000, help="Number of results.")] = None,
           source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
           mode: Annotated[Optional[str], typer.Option(help="hybrid | dense | bm25")] = None,
           as_json: JsonOpt = False) -> None:
    """Hybrid search as a user: only documents they may read are considered."""
    with friendly_errors():
        if mode not in (None, "hybrid", "dense", "bm25"):
            raise ConfigError(f"--mode {mode!r}: use hybrid, dense or bm25")
        ws = _ws()
        hits = ws.search(query, ws.principal(as_user), k, source=source, mode=mode)
    if as_json:
        emit_json([h.to_dict() for h in hits])
        return
    if not hits:
        console.print(styled(f"no results that {as_user} may read"))
    for i, h in enumerate(hits, 1):
        where = h.path + (f" p.{h.page}" if h.page else "") + (f" § {h.section}" if h.section else "")
        console.print(styled((f"{i}.", "bold"), " ", (where, "cyan"), f"  (score {h.score:.4f})"))
        snippet = " ".join(h.text.split())
        console.print(styled(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}"))


from bastion.cli.answers import register as _register_answers  # noqa: E402
from bastion.cli.monitor import register as _register_monitor  # noqa: E402
from bastion.cli.server import register as _register_server  # noqa: E402

_register_answers(app, lambda: _ws())
_register_server(app, lambda: _ws(), _cli_audit)
_register_monitor(app, lambda: _ws(), _cli_audit)


def main() -> None:
    install_excepthook()
    app()


if __name__ == "__main__":
    main()
