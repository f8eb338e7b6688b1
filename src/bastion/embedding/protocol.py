"""The embedder plugin boundary."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised float32 vectors.

    ``id`` names the model *and* its exact weights; the index refuses vectors from another id.
    """

    id: str
    dimension: int

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        """Embed documents; returns an array of shape (len(texts), dimension)."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one search query; returns shape (dimension,)."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many model tokens ``text`` takes (used to size chunks)."""
        ...
