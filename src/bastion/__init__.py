"""Bastion: put company documents and databases behind a local LLM, safely.

>>> import bastion
>>> ws = bastion.Workspace.init("/tmp/demo-ws")          # doctest: +SKIP
>>> ws.search("travel policy", as_user="alice")           # doctest: +SKIP
"""
from bastion.core.errors import BastionError
from bastion.core.types import Principal

__all__ = ["BastionError", "Principal", "Workspace"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Workspace":  # lazy: importing bastion must stay cheap
        from bastion.workspace import Workspace

        return Workspace
    raise AttributeError(name)
