"""``bastion mcp``: Bastion's MCP tools over stdin/stdout, for a desktop client (Claude Desktop, an IDE) or
a local agent that starts it as a subprocess. It acts as one user for the whole run:

- the owner of the API key (or OIDC token) in ``$BASTION_API_KEY``: the recommended way, since a key
  proves who is asking, is checked again on every call, and ends when it is revoked; or
- ``--as USER``, only for the operating-system user who owns the workspace folder. Whoever can read the
  workspace's files already holds all of its data, so this proves nothing beyond that; the audit log
  records it as ``via: local`` with the operating-system user's name.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import open_ws
from bastion.cli.output import err_console, friendly_errors, styled
from bastion.core.errors import AuthError

KEY_ENV = "BASTION_API_KEY"
app = typer.Typer()


@app.command("mcp")
def mcp(as_user: Annotated[Optional[str], typer.Option(
        "--as", help=f"Act as this user without a key; only for the owner of the workspace folder "
                     f"(default: the owner of the API key in ${KEY_ENV}).")] = None) -> None:
    """Serve Bastion's MCP tools (search, ask, get_document) on stdin/stdout, as one user."""
    import anyio

    from bastion.server.mcp import LocalServer, build_mcp, key_caller, local_request, user_caller
    from bastion.server.problems import Problem

    key = os.environ.get(KEY_ENV, "").strip() or None
    with friendly_errors():
        if key and as_user:
            raise AuthError(f"${KEY_ENV} is set and --as was given: use one of them")
        if not key and not as_user:
            raise AuthError(f"set ${KEY_ENV} to an API key of the user to act as (bastion key create --user NAME), "
                            "or, as the owner of the workspace folder, pass --as NAME")
        ws = open_ws()
        server = LocalServer(ws)
        try:
            if key:
                user = server.auth.identify(local_request(f"Bearer {key}")).user_id
                caller = key_caller(server, key)
            else:
                assert as_user is not None
                os_user = _workspace_owner(ws.home)
                user = ws.principal(as_user).user_id
                caller = user_caller(server, user, os_user)
        except Problem as p:
            ws.close()
            raise AuthError(f"{KEY_ENV}: {p.detail}") from None
        tools = build_mcp(server, caller)
        err_console.print(styled("Bastion MCP server on stdio, as ", (user, "bold"), f" (workspace {ws.home})"))
    try:
        anyio.run(tools.run_stdio_async)
    except KeyboardInterrupt:
        pass
    finally:
        ws.close()


def _workspace_owner(home: Path) -> str:
    """The operating-system user running this, if they own the workspace folder; otherwise an error."""
    import getpass

    if not hasattr(os, "getuid"):
        raise AuthError(f"--as needs a system that records who owns {home}; use an API key in ${KEY_ENV}")
    if home.stat().st_uid != os.getuid():
        raise AuthError(f"--as is only for the owner of the workspace folder {home}; "
                        f"use an API key in ${KEY_ENV} (bastion key create --user NAME)")
    return getpass.getuser()
