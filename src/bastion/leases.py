"""Names one process at a time may hold, kept in the catalog: what several servers must agree on.

Two kinds, both shared by every process on one catalog:

* a **lease** (:func:`claim`): a row naming its holder and when it expires. Claiming is one atomic
  upsert that succeeds only when the name is free, expired, or already the caller's, so two servers
  claiming at once cannot both win. :func:`claim_once` is the single-use form (a sign-in state that
  must not be accepted twice, on any server) and a time slot's name makes a "once per interval"
  turn (a scheduled job run by one server of several).
* a **catalog lock** (:func:`catalog_lock`): held while a block runs and released when it ends or
  its process dies. On PostgreSQL it is a session advisory lock on a connection of its own, so a
  sync on one machine keeps a sync on another out of the same index; SQLite is a file on one
  machine, where the workspace's file lock already does this.

>>> from bastion.catalog.db import Catalog
>>> cat = Catalog.open("sqlite:///:memory:")
>>> claim(cat, "report", 60, "server-a"), claim(cat, "report", 60, "server-b"), claim(cat, "report", 60, "server-a")
(True, False, True)
>>> claim_once(cat, "state:abc", 600), claim_once(cat, "state:abc", 600)
(True, False)
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy import Table, delete, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bastion.catalog.db import Catalog
from bastion.catalog.models import LeaseRow
from bastion.core.errors import CatalogError

TABLE = cast(Table, LeaseRow.__table__)
MAX_NAME = 200


def claim(catalog: Catalog, name: str, ttl_s: float, holder: str, *, clock: Callable[[], float] = time.time) -> bool:
    """Hold ``name`` for ``ttl_s`` seconds as ``holder``: True when it was free, expired or already
    ``holder``'s (then renewed), False while someone else holds it."""
    if len(name) > MAX_NAME:
        raise ValueError(f"lease name too long ({len(name)} characters): at most {MAX_NAME}")
    now = clock()
    with catalog.session(write=True) as s:
        dialect = s.get_bind().dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise CatalogError(f"leases need SQLite or PostgreSQL as the catalog, not {dialect}")
        insert = sqlite_insert(TABLE) if dialect == "sqlite" else pg_insert(TABLE)
        upsert = insert.values(key=name, holder=holder, expires_at=now + ttl_s).on_conflict_do_update(
            index_elements=[TABLE.c.key], set_={"holder": holder, "expires_at": now + ttl_s},
            where=(TABLE.c.expires_at <= now) | (TABLE.c.holder == holder),
        )
        return s.execute(upsert.returning(TABLE.c.holder)).first() is not None  # no row: the conflict's condition was false


def release(catalog: Catalog, name: str, holder: str) -> None:
    """Give ``name`` up, if ``holder`` holds it."""
    with catalog.session(write=True) as s:
        s.execute(delete(TABLE).where(TABLE.c.key == name, TABLE.c.holder == holder))


def claim_once(catalog: Catalog, name: str, ttl_s: float, *, clock: Callable[[], float] = time.time) -> bool:
    """True the first time ``name`` is claimed within ``ttl_s``, False every other time, on any
    process. Long names (tokens) are kept as their sha256; expired claims are deleted on the way."""
    key = name if len(name) <= 64 else "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    with catalog.session(write=True) as s:
        s.execute(delete(TABLE).where(TABLE.c.expires_at < clock() - 60))  # a minute's grace for slow clocks
    return claim(catalog, key, ttl_s, secrets.token_hex(16), clock=clock)


def _lock_id(name: str) -> int:
    """A PostgreSQL advisory lock id (a signed 64-bit number) for ``name``."""
    return int.from_bytes(hashlib.sha256(f"bastion:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def catalog_lock(catalog: Catalog, name: str) -> Iterator[bool]:
    """Hold the catalog lock ``name`` while the block runs; yields False (and holds nothing) when
    another process holds it. Always True on SQLite (one machine: a file lock does this there)."""
    if catalog.engine.dialect.name != "postgresql":
        yield True
        return
    lock = _lock_id(name)
    with catalog.engine.connect() as conn:  # a connection of its own: the lock lives as long as it
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock}).scalar():
            yield False
            return
        try:
            yield True
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock})


__all__ = ["catalog_lock", "claim", "claim_once", "release"]
