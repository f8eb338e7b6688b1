"""When a search or a question finds nothing: say so if the index itself is empty.

"No results that bob may read" over an empty index blames the ACL; the index being empty (no
source, no sync yet, or a sync that indexed nothing) is said instead, with the command that fills
it. Only asked after an empty result, so a search that finds something pays nothing for it.
"""
from __future__ import annotations

from bastion.cli.common import open_ws
from bastion.cli.output import err_console, styled


def empty_index_hint(source: str | None = None) -> str | None:
    """Why nothing can be found for anyone (in ``source``), or None when documents are indexed."""
    return open_ws().index_status(source).hint


def print_hint(hint: str) -> None:
    """The hint on stderr (stdout keeps a command's JSON as it is)."""
    err_console.print(styled(("note:", "bold yellow"), f" {hint}"))
