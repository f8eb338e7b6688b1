"""Leases and the catalog lock: what one process holds, another process on the same catalog cannot take.

Two ``Catalog`` objects on one database stand for two servers (each has its own connections)."""
from __future__ import annotations

import threading

import pytest

from bastion.catalog.db import Catalog
from bastion.core.errors import WorkspaceError
from bastion.leases import catalog_lock, claim, claim_once, release


def test_one_holder_at_a_time_until_it_expires_or_is_released(catalog_url):
    a, b = Catalog.open(catalog_url), Catalog.open(catalog_url)
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    assert claim(a, "directory-sync", 30, "server-a", clock=clock)
    assert not claim(b, "directory-sync", 30, "server-b", clock=clock)  # held by A
    assert claim(a, "directory-sync", 30, "server-a", clock=clock)  # A renews its own
    assert claim(b, "report", 30, "server-b", clock=clock)  # positive control: another name is free
    now[0] += 31
    assert claim(b, "directory-sync", 30, "server-b", clock=clock)  # A's lapsed: B takes it
    release(b, "directory-sync", "server-a")  # not A's any more: nothing happens
    assert not claim(a, "directory-sync", 30, "server-a", clock=clock)
    release(b, "directory-sync", "server-b")
    assert claim(a, "directory-sync", 30, "server-a", clock=clock)
    a.close(), b.close()


def test_a_single_use_name_is_accepted_once_across_processes_even_when_raced(catalog_url):
    servers = [Catalog.open(catalog_url) for _ in range(2)]
    wins: list[bool] = []
    lock = threading.Lock()

    def race(cat: Catalog) -> None:
        won = claim_once(cat, "oidc-state:" + "x" * 80, 600)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=race, args=(servers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert claim_once(servers[1], "oidc-state:other", 600)  # positive control: another state is accepted
    for cat in servers:
        cat.close()


@pytest.mark.services
def test_a_sync_on_another_machine_keeps_this_one_out(pg_url, tmp_path):
    """Two workspace folders (two machines) on one PostgreSQL catalog: the file lock cannot see the
    other machine's sync, the catalog lock does."""
    from tests.catalog.conftest import open_workspace
    from tests.conftest import write

    write(tmp_path / "docs" / "a.md", "# A\n\nThe canteen opens at eight.\n")
    here, there = open_workspace(tmp_path / "here", pg_url), open_workspace(tmp_path / "there", pg_url)
    here.sources.add_folder("docs", tmp_path / "docs", acl="everyone")
    with catalog_lock(there.catalog, "sync") as held:
        assert held
        with pytest.raises(WorkspaceError, match="another sync is running on this catalog"):
            here.sync()
    assert [r.status for r in here.sync()] == ["completed"]  # released: the sync runs
    here.close(), there.close()
