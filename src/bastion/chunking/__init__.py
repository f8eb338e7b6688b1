"""Structure- and token-aware chunking."""
from bastion.chunking.chunker import Chunker, split_sentences

__all__ = ["Chunker", "split_sentences"]
