"""tests/ingest/test_crash.py against the pgvector store: kill -9 a real sync at random moments; after
every kill no document has two versions in the PostgreSQL tables, and the next sync converges to exactly
the chunks a sync that never crashed holds (that reference workspace is on the embedded Lance index, so
both stores also agree chunk for chunk)."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from bastion.stores.pgvector import PgVectorStore
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.ingest.test_crash import CHILD, _assert_one_version_per_document, _index_state, _mutate, _workspace

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

    landed = 0
    for _ in range(rounds):
        _mutate(rng, docs, names)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(home)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "SYNC-START", child.stderr.read()
        time.sleep(rng.uniform(0.0, 0.35))
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        landed += "SYNC-DONE" not in out
        assert child.returncode in (0, -signal.SIGKILL), err
        _assert_one_version_per_document(_index_state(Workspace.open(home, embedder=HashEmbedder())))

        recovered = Workspace.open(home, embedder=HashEmbedder())
        [report] = recovered.sync()
        reference.sync()
        assert report.documents_failed == 0
        assert _index_state(recovered) == _index_state(reference)  # none lost, none duplicated
    assert landed >= rounds // 3, "the kills did not land inside syncs"
    again = Workspace.open(home, embedder=HashEmbedder()).sync()[0]
    assert again.documents_unchanged == len(names) and again.chunks_written == 0
