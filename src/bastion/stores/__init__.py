"""Chunk stores: protocol + backends."""
from bastion.stores.protocol import ChunkStore, Ranked, StoredChunk, StoreHit

__all__ = ["ChunkStore", "Ranked", "StoreHit", "StoredChunk"]
