"""Chunk stores: protocol + backends."""
from bastion.stores.protocol import ChunkStore, StoredChunk

__all__ = ["ChunkStore", "StoredChunk"]
