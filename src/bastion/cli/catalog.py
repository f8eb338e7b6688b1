"""``bastion catalog …``: the catalog database (users, documents, keys, audit log): move it to PostgreSQL."""
from __future__ import annotations

import getpass
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled

app = typer.Typer(name="catalog", help="The catalog database: copy it to PostgreSQL.", no_args_is_help=True)


@app.command("migrate-to")
def migrate_to(url: Annotated[str, typer.Argument(help="An empty PostgreSQL database, e.g. "
                                                       "postgresql+psycopg://bastion@db.example:5432/bastion")],
               password_env: Annotated[Optional[str], typer.Option(
                   "--password-env", help="The environment variable holding the database password.")] = None,
               force: Annotated[bool, typer.Option("--force", help="Replace the rows the target already holds.")] = False,
               as_json: JsonOpt = False) -> None:
    """Copy this workspace's SQLite catalog into a PostgreSQL database and check the copy.

    The SQLite file is only read. Stop `bastion serve` first, so that nothing changes during the copy."""
    from pydantic import ValidationError

    from bastion.audit import AuditLog
    from bastion.catalog.copy import copy_catalog
    from bastion.catalog.db import Catalog, where
    from bastion.core.config import CatalogConfig
    from bastion.core.errors import CatalogError

    with friendly_errors():
        try:
            cfg = CatalogConfig(url=url, password_env=password_env)
        except ValidationError as exc:  # the messages never quote the URL (it may hold a password)
            raise CatalogError("; ".join(e["msg"] for e in exc.errors())) from None
        ws = open_ws()
        source = ws.data_dir / "catalog.db"
        target = Catalog.for_workspace(ws.data_dir, cfg)  # connects, and creates the schema when it is empty
        try:
            report = copy_catalog(source, target, force=force)
            target_name = where(target.engine.url)
            # audited in the new catalog: the source file is never written
            AuditLog(target).record(actor=f"cli:{getpass.getuser()}", via="cli", action="catalog.migrate_to",
                                    outcome="ok", target=target_name, detail={"tables": len(report), "force": force})
        finally:
            target.close()
    setting = f'[catalog]\nurl = "{url}"' + (f'\npassword_env = "{password_env}"' if password_env else "")
    if as_json:
        emit_json({"source": str(source), "target": target_name, "tables": [r.to_dict() for r in report],
                   "config": setting})
        return
    table = Table("table", "source rows", "copied rows", "rows compared", "differ")
    for r in report:
        table.add_row(r.table, str(r.source_rows), str(r.target_rows), str(r.sampled), str(r.mismatched))
    console.print(table)
    console.print(styled(f"copied {sum(r.target_rows for r in report)} rows in {len(report)} tables into the "
                         f"{target_name}; {source} is unchanged."))
    console.print(styled("To use it, put this in bastion.toml (the password stays in the environment):"))
    console.print(styled((setting, "bold"), multiline=True), soft_wrap=True)

