"""``bastion serve``: the HTTP API, the OpenAI-compatible API and the web UI in one process."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli.common import open_ws
from bastion.cli.output import console, friendly_errors, styled
from bastion.core.threads import limit_math_threads

if TYPE_CHECKING:
    from bastion.core.config import WorkspaceConfig

app = typer.Typer()


def serving_config(cfg: WorkspaceConfig) -> WorkspaceConfig:
    """The workspace's config as a server process runs it (a copy; the loaded one is left alone).

    This process only embeds queries, on ``server.query_threads`` threads; the syncs it starts run
    in children with ``server.sync_threads``, else the configured ``embedder.threads``.
    """
    server = cfg.server.model_copy(update={"sync_threads": cfg.server.sync_threads or cfg.embedder.threads})
    embedder = cfg.embedder.model_copy(update={"threads": cfg.server.query_threads})
    return cfg.model_copy(update={"server": server, "embedder": embedder})


@app.command()
def serve(host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: server.host).")] = None,
          port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default: server.port).")] = None) -> None:
    """Run the HTTP API, the OpenAI-compatible API, the MCP server and the web UI in one process."""
    import os

    # many requests share the cores: idle OpenMP threads should sleep, not spin (measured in
    # docs/benchmarks.md); set before the embedder's OpenMP runtime starts
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from bastion.server import serve as run

    with friendly_errors():
        ws = open_ws()
        # before the embedder is built, which reads the threads from the config
        ws.config = serving_config(ws.config)
        limit_math_threads(ws.config.server.query_threads)
        if not ws.accounts.admins():
            console.print(styled(("no admin yet", "yellow"), ": make one with `bastion user add NAME --role admin` "
                                 "and `bastion user passwd NAME`"))
        cfg = ws.config.server
        console.print(styled(f"Bastion on http://{host or cfg.host}:{port or cfg.port}/  (API docs: /api/docs)"))
        run(ws, host, port)
