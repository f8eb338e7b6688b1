"""Fakes and contract suites shipped for users' plugins and for our own fast tests.

Never the product path: nothing in Bastion selects a fake by configuration.
"""
from typing import TYPE_CHECKING

from bastion.testing.fake_llm import ScriptedLLM
from bastion.testing.fakes import HashEmbedder

if TYPE_CHECKING:
    from bastion.testing.connector_contract import ConnectorContract

__all__ = ["ConnectorContract", "HashEmbedder", "ScriptedLLM"]


def __getattr__(name: str) -> object:
    if name == "ConnectorContract":  # imported on use: it needs pytest, which the product does not
        from bastion.testing.connector_contract import ConnectorContract

        return ConnectorContract
    raise AttributeError(f"module 'bastion.testing' has no attribute {name!r}")
