"""Fakes and contract suites shipped for users' plugins and for our own fast tests.

Never the product path: nothing in Bastion selects a fake by configuration.
"""
from bastion.testing.fake_llm import ScriptedLLM
from bastion.testing.fakes import HashEmbedder

__all__ = ["HashEmbedder", "ScriptedLLM"]
