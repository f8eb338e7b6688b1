"""Failed logins are counted in the catalog: two processes' throttles (two catalog connections,
as two servers have) counting the same pair at once lose no count, and a lock set through one
holds through the other."""
from __future__ import annotations

import threading

from sqlalchemy import func, select

from bastion.catalog.db import Catalog
from bastion.catalog.models import LoginFailureRow
from bastion.login_throttle import LoginThrottle

LIMITS = {"max_per_pair": 1000, "max_per_address": 1000, "base_s": 30, "max_s": 900, "window_s": 900}


def test_two_catalog_connections_counting_at_once_lose_no_failure(catalog_url):
    servers = [Catalog.open(catalog_url) for _ in range(2)]
    throttles = [LoginThrottle(cat, **LIMITS) for cat in servers]
    threads, rounds = 8, 25
    errors: list[BaseException] = []

    def hammer(t: LoginThrottle) -> None:
        try:
            for _ in range(rounds):
                t.failed("alice", "203.0.113.5")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=hammer, args=(throttles[i % 2],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with servers[0].session() as s:
        counts = dict(s.execute(select(LoginFailureRow.kind, func.sum(LoginFailureRow.failures))
                                .group_by(LoginFailureRow.kind)).all())
    assert counts == {"pair": threads * rounds, "address": threads * rounds}
    # the next failure crosses a limit of exactly that many: it locks, seen through the other connection
    throttles[0].max_per_pair = threads * rounds + 1
    assert throttles[1].wait("alice", "203.0.113.5") == 0
    assert throttles[0].failed("alice", "203.0.113.5") == 30
    assert 29 <= throttles[1].wait("alice", "203.0.113.5") <= 30
    assert throttles[1].wait("alice", "198.51.100.1") == 0  # positive control: another address
    throttles[1].forget_user("alice")  # a new password clears the pair everywhere (the address keeps its count)
    assert throttles[0].wait("alice", "203.0.113.5") == 0
    for cat in servers:
        cat.close()


def test_old_failures_are_forgotten_and_deleted(catalog_url):
    now = [1000.0]
    cat = Catalog.open(catalog_url)
    t = LoginThrottle(cat, max_per_pair=2, max_per_address=50, base_s=30, max_s=900, window_s=60,
                      clock=lambda: now[0])
    assert [t.failed("bob", "a"), t.failed("bob", "a")] == [0, 30]
    now[0] += 30 + 61  # the lock is over and the window passed: the next failure starts afresh
    assert t.wait("bob", "a") == 0 and t.failed("bob", "a") == 0
    now[0] += 120  # a minute later the rows that lock nothing are deleted
    t.failed("carol", "b")
    with cat.session() as s:
        kinds = sorted(s.scalars(select(LoginFailureRow.kind)))
    assert kinds == ["address", "pair"]  # carol's pair and address b; bob's and a's are gone
    cat.close()
