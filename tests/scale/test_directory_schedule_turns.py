"""Several servers with ``[directory.ldap] interval``: one of them syncs the directory per interval."""
from __future__ import annotations

from bastion.identity.schedule import DirectorySyncSchedule
from tests.catalog.conftest import open_workspace


def test_one_server_per_interval_runs_the_directory_sync(catalog_url, tmp_path):
    a = open_workspace(tmp_path / "a", catalog_url)
    b = open_workspace(tmp_path / "b", catalog_url)
    every = 3600.0  # one slot for the whole test
    turns = [DirectorySyncSchedule(ws, every)._my_turn() for ws in (a, b, a)]
    assert turns == [True, False, False]
    assert DirectorySyncSchedule(a, 7200.0)._my_turn()  # positive control: another interval's slot is free
    a.close(), b.close()
