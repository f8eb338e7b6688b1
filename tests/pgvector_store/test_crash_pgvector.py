"""tests/ingest/test_crash.py against the pgvector store: kill -9 a real sync at random moments; after
every kill no document has two versions in the PostgreSQL tables, and the next sync converges to exactly
the chunks a sync that never crashed holds (that reference workspace is on the embedded Lance index, so
both stores also agree chunk for chunk)."""
from __future__ import annotations

import os
import random

import pytest

from bastion.stores.pgvector import PgVectorStore
from tests.ingest.test_crash import _mutate, _workspace, kill_and_recover

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_kill_minus_nine_during_a_pgvector_sync_converges(tmp_path, pg_url):
    rng = random.Random(int(os.environ.get("BASTION_CRASH_SEED", "20261203")))
    rounds = int(os.environ.get("BASTION_CRASH_ROUNDS", "10"))
    docs = tmp_path / "docs"
    docs.mkdir()
    names: list[str] = []
    config = "[ingest]\nbatch_chunks = 6\n[chunking]\nmax_tokens = 64\noverlap_tokens = 8\n"
    home = tmp_path / "ws"
    crashing = _workspace(home, docs, config + f'[store]\nbackend = "pgvector"\nurl = "{pg_url}"\n')
    assert isinstance(crashing.store, PgVectorStore)
    reference = _workspace(tmp_path / "reference", docs, config)  # never crashes
    for _ in range(4):
        _mutate(rng, docs, names)

    kill_and_recover(rng, rounds, home, reference, docs, names)
