"""``bastion``: the command line. Each module of :mod:`bastion.cli` holds one ``typer.Typer``
(its commands, or one named group of them); this one only puts them together.

Each command opens the workspace, calls the Python API, prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli import access, answers, audit, evaluation, index, keys, lineage, models, monitor, server, sources, tune
from bastion.cli import catalog as catalog_cli
from bastion.cli import directory as directory_cli
from bastion.cli import doctor as doctor_cli
from bastion.cli import mcp as mcp_cli
from bastion.cli.common import CliState, cli_home
from bastion.cli.flags import hide_flag_types
from bastion.cli.output import install_excepthook

if TYPE_CHECKING:
    from bastion.workspace import Workspace

app = typer.Typer(help="Bastion: company knowledge behind a local LLM, safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
hide_flag_types()  # --json, not --json <bool>
# the order of the commands in ``bastion --help``
for part in (index, answers, server, mcp_cli, doctor_cli, access, directory_cli, catalog_cli, sources, models, evaluation, tune, lineage, keys, audit, monitor):
    app.add_typer(part.app)


def _ws() -> Workspace:
    """Open the workspace at ``--home`` (tests replace this to open it on a fake embedder)."""
    from bastion.workspace import Workspace

    return Workspace.open(cli_home())


@app.callback()
def _main(ctx: typer.Context,
          home: Annotated[Optional[Path], typer.Option("--home", help="Workspace folder (default: $BASTION_HOME or .).")] = None) -> None:
    ctx.obj = CliState(home=home, open_workspace=lambda: _ws())


def main() -> None:
    install_excepthook()
    app()


if __name__ == "__main__":
    main()
