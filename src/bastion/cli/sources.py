"""``bastion source …``: the folders and SQL tables a workspace syncs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, csv_list, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled
from bastion.core.errors import ConfigError

app = typer.Typer(name="source", help="Sources to sync (folders, SQL tables, web sites, Git, IMAP, S3).", no_args_is_help=True)


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["url=https://x", "max_pages=50"]`` -> options; a value that reads as JSON (numbers,
    true/false, lists) is taken as such, anything else as text."""
    import json

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: write KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@app.command("add")
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
    permissions: Annotated[str, typer.Option(help="Folders: where ACLs come from: acl-files, posix or both.")] = "acl-files",
    posix_other: Annotated[str, typer.Option(help="Folders (posix, both): principal the 'other' read bit grants; empty: nobody.")] = "",
    kind: Annotated[Optional[str], typer.Option("--kind", help="Another kind of source: web, git, imap, s3 or a package's.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="KEY=VALUE option of a --kind source (repeat).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a folder (--path), SQL (--sql) or other (--kind KIND -o KEY=VALUE ...) source."""
    with friendly_errors():
        if sum(bool(x) for x in (path, sql, kind)) != 1:
            raise ConfigError("give exactly one of --path DIR, --sql URL or --kind KIND")
        sources = open_ws().sources
        if kind:
            row = sources.add_kind(name, kind, parse_options(option or []), acl=acl)
        elif path:
            row = sources.add_folder(name, path, acl=acl, include=csv_list(include), exclude=csv_list(exclude), uploaders=uploaders,
                                     permissions=permissions, posix_other=posix_other or None)
        else:
            assert sql is not None  # exactly one of path and sql was given
            if not text_template:
                raise ConfigError("a SQL source needs --text-template, e.g. '{title}\\n{body}'")
            row = sources.add_sql(name, sql, id_column=id_column, template=text_template.replace("\\n", "\n"),
                                  table=table, query=query, updated_at_column=updated_at_column,
                                  acl_column=acl_column, title_column=title_column, acl=acl)
    if as_json:
        emit_json({"name": row.name, "kind": row.kind})
    else:
        where = "permissions from the file system" if path and permissions == "posix" else f"default ACL: {acl or 'nobody'}"
        console.print(styled(f"added {row.kind} source ", (row.name, "bold"), f" ({where})"))


def source_location(kind: str, cfg: dict) -> str:
    """Where a source reads from, for people: never a password or a database URL.

    >>> source_location("s3", {"bucket": "reports", "prefix": "finance/"})
    's3://reports/finance/'
    >>> source_location("git", {"url": "https://bot:secret@git.example.org/handbook.git", "ref": "main"})
    'https://git.example.org/handbook.git @ main'
    """
    from urllib.parse import urlsplit, urlunsplit

    def bare(url: str) -> str:  # no user name or password in what is shown
        parts = urlsplit(url)
        if parts.netloc and "@" in parts.netloc:
            parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        return urlunsplit(parts)

    if kind == "folder":
        return str(cfg.get("path") or "")
    if kind == "sql":
        return str(cfg.get("table") or "query")
    if kind == "web":
        return bare(str(cfg.get("url") or cfg.get("sitemap") or ""))
    if kind == "git":
        ref = cfg.get("ref")
        return bare(str(cfg.get("url") or "")) + (f" @ {ref}" if ref else "")
    if kind == "s3":
        return f"s3://{cfg.get('bucket', '')}/{cfg.get('prefix') or ''}"
    if kind == "imap":
        return f"{cfg.get('username', '')}@{cfg.get('host', '')}"
    return "-"


@app.command("list")
def source_list(as_json: JsonOpt = False) -> None:
    """List sources."""
    from bastion.sources import source_kind

    with friendly_errors():
        rows = open_ws().sources.list()
    data = [{"name": r.name, "kind": source_kind(r.kind), "location": source_location(source_kind(r.kind), r.config),
             "acl": r.config.get("acl") or ""} for r in rows]
    if as_json:
        emit_json(data)
        return
    table = Table("name", "kind", "location", "default ACL")
    for d in data:
        table.add_row(d["name"], d["kind"], d["location"], d["acl"] or "(nobody)")
    console.print(table)


@app.command("edit")
def source_edit(
    name: str,
    path: Annotated[Optional[Path], typer.Option("--path", help="Folders: the folder to sync.")] = None,
    acl: Annotated[Optional[str], typer.Option(help="Default ACL ('' for nobody).")] = None,
    include: Annotated[Optional[str], typer.Option(help="Folders: comma-separated globs to include.")] = None,
    exclude: Annotated[Optional[str], typer.Option(help="Folders: comma-separated globs to exclude.")] = None,
    uploaders: Annotated[Optional[str], typer.Option(help="Folders: principals whose editors may upload.")] = None,
    permissions: Annotated[Optional[str], typer.Option(help="Folders: where ACLs come from: acl-files, posix or both.")] = None,
    posix_other: Annotated[Optional[str], typer.Option(help="Folders: principal the 'other' read bit grants ('' for nobody).")] = None,
    sql: Annotated[Optional[str], typer.Option("--sql", help="SQL: the database URL.")] = None,
    table: Annotated[Optional[str], typer.Option(help="SQL: the table.")] = None,
    query: Annotated[Optional[str], typer.Option(help="SQL: a query instead of a table.")] = None,
    text_template: Annotated[Optional[str], typer.Option(help="SQL: text over columns.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a source's settings (each checked before any is stored); the next sync applies them."""
    from bastion.source_admin import edit_source

    given = {"path": str(path) if path else None, "acl": acl, "uploaders": uploaders, "permissions": permissions,
             "posix_other": posix_other, "url": sql, "table": table,
             "query": query, "text_template": text_template.replace("\\n", "\n") if text_template else None,
             "include": csv_list(include) if include is not None else None,
             "exclude": csv_list(exclude) if exclude is not None else None}
    changes = {k: v for k, v in given.items() if v is not None}
    with friendly_errors():
        if not changes:
            raise ConfigError("nothing to change: give at least one setting, e.g. --acl 'group:finance'")
        ws = open_ws()
        row = edit_source(ws.sources, name, changes)
        cli_audit(ws, "source.edit", name, {"changed": sorted(changes)})
    if as_json:
        emit_json({"name": row.name, "changed": sorted(changes)})
    else:
        console.print(styled("changed ", (", ".join(sorted(changes)), "bold"), f" of source {row.name}; "
                             f"run `bastion sync {row.name}` to apply it to the index"))


@app.command("remove")
def source_remove(name: str,
                  yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
                  as_json: JsonOpt = False) -> None:
    """Remove a source and its documents from the index (lineage and the audit log keep what answers used)."""
    import getpass

    with friendly_errors():
        ws = open_ws()
        ws.sources.get(name)  # an unknown source: a clear error before asking
        if not yes and not typer.confirm(f"remove source {name!r} and all its documents from the index?"):
            raise typer.Exit(1)
        out = ws.remove_source(name, by=f"cli:{getpass.getuser()}")
        cli_audit(ws, "source.remove", name, {"documents": out["documents"],
                                              "adapters_withdrawn": out["adapters_withdrawn"]})
    if as_json:
        emit_json(out)
    else:
        console.print(styled("removed source ", (name, "bold"), f" and its {out['documents']} documents"
                             + (f"; adapters withdrawn: {', '.join(out['adapters_withdrawn'])}"
                                if out["adapters_withdrawn"] else "")))
