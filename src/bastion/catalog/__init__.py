"""Relational catalog: the source of truth the index is derived from."""
from bastion.catalog.db import Catalog

__all__ = ["Catalog"]
