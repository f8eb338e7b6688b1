"""Failed logins counted in the catalog, so every server on one catalog enforces the same lockouts.

Several ``bastion serve`` processes behind a load balancer must act as one: a password guessed
wrong on one server counts on all of them, and a lock set by one holds on every other. So the
counters are catalog rows, not process memory. Each failure is one atomic upsert (``INSERT ...
ON CONFLICT DO UPDATE ... RETURNING``) on SQLite and PostgreSQL alike: two servers counting the
same pair at the same moment each add one, neither overwrites the other. The clock is the wall
clock (``time.time``), so the machines running servers keep their clocks in step (NTP).

Rows are keyed by a sha256 of (kind, user name, address): neither a user name (people type their
password in that field by mistake) nor an address is stored in the clear.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import cast

from sqlalchemy import Engine, Table, and_, case, create_engine, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from bastion.catalog.db import Catalog
from bastion.catalog.models import LoginFailureRow

log = logging.getLogger("bastion.accounts")
TABLE = cast(Table, LoginFailureRow.__table__)
TRIM_EVERY_S = 60.0  # how often one process deletes the rows that no longer lock anything


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _private_catalog() -> Catalog:
    """One in-memory table for a throttle made without a catalog (a single process: tests, doctests)."""
    engine: Engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    TABLE.create(engine)
    return Catalog(engine)


class LoginThrottle:
    """Failed logins counted per (user name, client address) and per client address.

    A pair is locked after ``max_per_pair`` failures, an address after ``max_per_address`` (whatever
    the user names): ``base_s``, doubling per further failure up to ``max_s``. Failures are forgotten
    ``window_s`` after the last one; a successful login clears its pair (not its address). User names
    are counted whether or not they exist, so the answers do not tell which do, and a lock applies
    to one address only, so nobody can lock an account out from everywhere.

    The counts live in ``catalog`` (shared by every process using it); without one, in a private
    in-memory database of this object.

    >>> t = LoginThrottle(max_per_pair=2, max_per_address=3, base_s=30, max_s=900, window_s=900, clock=lambda: 0.0)
    >>> t.failed("alice", "10.0.0.1"), t.failed("alice", "10.0.0.1"), t.wait("alice", "10.0.0.1")
    (0, 30, 30)
    >>> t.wait("alice", "10.0.0.2"), t.failed("nobody", "10.0.0.1"), t.wait("carol", "10.0.0.1")
    (0, 30, 30)
    """

    def __init__(self, catalog: Catalog | None = None, *, max_per_pair: int, max_per_address: int, base_s: int,
                 max_s: int, window_s: int, clock: Callable[[], float] = time.time):
        self.max_per_pair, self.max_per_address = max_per_pair, max_per_address
        self.base_s, self.max_s, self.window_s, self.clock = base_s, max_s, window_s, clock
        self._private = catalog is None
        self.catalog = _private_catalog() if catalog is None else catalog
        self._trimmed_at: float | None = None

    @staticmethod
    def _keys(username: str, client: str | None) -> list[tuple[str, str, str | None]]:
        """(row key, kind, user hash) of the pair and of the address."""
        address = client or ""
        return [(_sha256(f"pair\x00{username}\x00{address}"), "pair", _sha256(username)),
                (_sha256(f"address\x00{address}"), "address", None)]

    def wait(self, username: str, client: str | None) -> int:
        """Seconds until ``username`` may try to log in from ``client`` (0: now)."""
        now = self.clock()
        keys = [k for k, _, _ in self._keys(username, client)]
        with self.catalog.session(write=self._private) as s:
            until = s.scalar(select(TABLE.c.locked_until).where(TABLE.c.key.in_(keys))
                             .order_by(TABLE.c.locked_until.desc()).limit(1))
        return math.ceil(until - now) if until is not None and until > now else 0

    def failed(self, username: str, client: str | None) -> int:
        """Count a failure; the seconds the caller must now wait (0: not locked)."""
        now = self.clock()
        (pair, _, user_hash), (address, _, _) = self._keys(username, client)
        with self.catalog.session(write=True) as s:  # pair before address, in every process: no deadlock
            waits = [self._strike(s, pair, "pair", user_hash, self.max_per_pair, now),
                     self._strike(s, address, "address", None, self.max_per_address, now)]
        self._trim(now)
        return max(waits)

    def _strike(self, s: Session, key: str, kind: str, user_hash: str | None, limit: int, now: float) -> int:
        failures, locked_until = self._count(s, key, kind, user_hash, now)
        over = failures - limit
        if over < 0:
            return 0
        until = max(locked_until, now + min(self.base_s * 2 ** min(over, 32), self.max_s))
        if until > locked_until:  # the row stays locked by the upsert until this transaction ends
            s.execute(update(TABLE).where(TABLE.c.key == key).values(locked_until=until))
        return math.ceil(until - now)

    def _count(self, s: Session, key: str, kind: str, user_hash: str | None, now: float) -> tuple[int, float]:
        """Add one failure to ``key`` (starting afresh when its last failure is older than the window
        and it locks nothing); (failures, locked until) after it."""
        stale = and_(TABLE.c.last_at < now - self.window_s, TABLE.c.locked_until <= now)
        fresh = {"key": key, "kind": kind, "user_hash": user_hash, "failures": 1, "last_at": now, "locked_until": 0.0}
        dialect = s.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite_insert if dialect == "sqlite" else pg_insert
            stmt = insert(TABLE).values(**fresh).on_conflict_do_update(
                index_elements=[TABLE.c.key],
                set_={"failures": case((stale, 1), else_=TABLE.c.failures + 1), "last_at": now,
                      "locked_until": case((stale, 0.0), else_=TABLE.c.locked_until)},
            ).returning(TABLE.c.failures, TABLE.c.locked_until)
            failures, locked_until = s.execute(stmt).one()
            return int(failures), float(locked_until)
        row = s.execute(select(TABLE).where(TABLE.c.key == key).with_for_update()).first()  # other databases
        if row is None:
            s.execute(TABLE.insert().values(**fresh))
            return 1, 0.0
        restart = row.last_at < now - self.window_s and row.locked_until <= now
        failures, locked_until = (1, 0.0) if restart else (row.failures + 1, row.locked_until)
        s.execute(update(TABLE).where(TABLE.c.key == key)
                  .values(failures=failures, last_at=now, locked_until=locked_until))
        return failures, locked_until

    def _trim(self, now: float) -> None:
        """Delete the rows that lock nothing and whose window has passed, at most once a minute here.
        Rows another transaction holds are skipped (PostgreSQL), so this never waits on a login."""
        if self._trimmed_at is not None and now - self._trimmed_at < TRIM_EVERY_S:
            return
        self._trimmed_at = now
        stale = select(TABLE.c.key).where(TABLE.c.last_at < now - self.window_s, TABLE.c.locked_until <= now)
        try:
            with self.catalog.session(write=True) as s:
                s.execute(delete(TABLE).where(TABLE.c.key.in_(stale.with_for_update(skip_locked=True)
                                                              .scalar_subquery())))
        except Exception:  # housekeeping: the next failure tries again
            log.warning("could not delete old login failures", exc_info=True)

    def succeeded(self, username: str, client: str | None) -> None:
        pair = self._keys(username, client)[0][0]
        with self.catalog.session(write=True) as s:
            s.execute(delete(TABLE).where(TABLE.c.key == pair))

    def forget_user(self, username: str) -> None:
        """Clear every address's failures for ``username`` (its password was just set)."""
        with self.catalog.session(write=True) as s:
            s.execute(delete(TABLE).where(TABLE.c.kind == "pair", TABLE.c.user_hash == _sha256(username)))


__all__ = ["LoginThrottle"]
