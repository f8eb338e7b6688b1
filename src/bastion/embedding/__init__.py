"""Embedders: a protocol, backends, and the content-hash cache."""
from bastion.embedding.protocol import Embedder

__all__ = ["Embedder"]
