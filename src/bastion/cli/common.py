"""What every ``bastion`` command shares: the ``--json`` option, the workspace opener, the audit line.

The root command (:mod:`bastion.cli.app`) keeps ``--home`` and the opener in its context's
``obj``, a :class:`CliState`; commands open the workspace with :func:`open_ws`.
"""
from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.main import get_current_context  # the context stack of the click that typer runs on

if TYPE_CHECKING:
    from bastion.workspace import Workspace

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass(frozen=True)
class CliState:
    """The root command's options: where the workspace is, and how to open it."""

    home: Path | None
    open_workspace: Callable[[], Workspace]


def cli_state() -> CliState:
    state = get_current_context().find_root().obj
    if not isinstance(state, CliState):
        raise RuntimeError("a bastion command runs under bastion.cli.app:app")
    return state


def cli_home() -> Path | None:
    """``--home`` as given (None: ``$BASTION_HOME`` or the current folder)."""
    return cli_state().home


def open_ws() -> Workspace:
    """Open the workspace of this command line."""
    return cli_state().open_workspace()


def for_one_query(ws: Workspace) -> None:
    """Set up a process that embeds one query (``search``), before its embedder loads: on
    ``server.query_threads`` threads (one by default), as the server embeds each query, and with
    idle OpenMP threads asleep rather than spinning. On a busy machine spinning threads cost one
    query seconds of CPU (docs/benchmarks.md, "Cold CLI search"); the vectors are the same."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cfg = ws.config
    ws.config = cfg.model_copy(update={"embedder": cfg.embedder.model_copy(update={"threads": cfg.server.query_threads})})


def cli_audit(ws: Workspace, action: str, target: str | None, detail: dict[str, Any], *,
              outcome: str = "ok") -> None:
    """Admin changes made from the CLI are audited too (actor: the operating-system user)."""
    ws.audit.record(actor=f"cli:{getpass.getuser()}", via="cli", action=action, outcome=outcome,
                    target=target, detail=detail)


def csv_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]
