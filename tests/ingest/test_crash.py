"""kill -9 a real sync subprocess at random moments; the next sync must converge exactly.

After every kill: no document has two versions in the index. After the final sync: the
index holds exactly the chunks a clean sync of the same files produces (none lost, none
duplicated), and the catalog agrees.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

pytestmark = pytest.mark.slow

CHILD = """
import sys, time
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

class SlowEmbedder(HashEmbedder):
    def embed_passages(self, texts):
        time.sleep(0.03)  # keep the sync busy long enough to be killed mid-way
        return super().embed_passages(texts)

ws = Workspace.open(sys.argv[1], embedder=SlowEmbedder())
ws.store  # open the index before announcing the start
print("SYNC-START", flush=True)
ws.sync()
print("SYNC-DONE", flush=True)
"""

WORDS = ("spindle bearing coolant torque invoice budget leave policy travel hotel audit supplier "
         "warranty firmware calibration 质量 检验 报销 年假 合同 供应商").split()


def _text(rng: random.Random, n: int) -> str:
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(n))


def _mutate(rng: random.Random, root, names: list[str]) -> None:
    for _ in range(rng.randint(3, 10)):
        action = rng.random()
        if action < 0.35 or not names:
            name = f"d{rng.randrange(10_000)}.txt"
            (root / name).write_text(_text(rng, rng.randint(1, 6)), encoding="utf-8")
            names.append(name)
        elif action < 0.65:
            name = rng.choice(names)
            (root / name).write_text(_text(rng, rng.randint(1, 6)), encoding="utf-8")
            os.utime(root / name, (time.time(), time.time() + rng.random() * 1000))
        elif action < 0.85:
            name = names.pop(rng.randrange(len(names)))
            (root / name).unlink()
        else:
            acl = root / ".bastion-acl"
            if acl.exists():
                acl.unlink()
            else:
                acl.write_text(rng.choice(["group:finance", "group:staff", "everyone"]))


def _index_state(ws: Workspace) -> list[tuple[str, str, str]]:
    return sorted(ws.store.chunk_keys())


def _assert_one_version_per_document(keys) -> None:
    versions: dict[str, set[str]] = {}
    for _, doc, version in keys:
        versions.setdefault(doc, set()).add(version)
    assert all(len(v) == 1 for v in versions.values()), "a document has two versions visible"
    dupes = [c for c, n in Counter(k[0] for k in keys).items() if n > 1]
    assert not dupes, f"duplicated chunks {dupes[:3]}"


def _workspace(home, docs, config: str) -> Workspace:
    Workspace.init(home)
    (home / "bastion.toml").write_text(config)
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.sources.add_folder("docs", docs, acl="everyone")
    return ws


def kill_and_recover(rng: random.Random, rounds: int, home, reference: Workspace, docs, names: list[str]) -> None:
    """``rounds`` times: change the source, start a sync of ``home`` in a child process, kill -9 it at a random
    moment; after each kill no document has two versions, and the next sync holds exactly the chunks of
    ``reference`` (a workspace that never crashes): none lost, none duplicated. A last sync changes nothing."""
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
        # exactly the chunks a sync that never crashed holds: none lost, none duplicated
        assert _index_state(recovered) == _index_state(reference)
    assert landed >= rounds // 3, "the kills did not land inside syncs"
    again = Workspace.open(home, embedder=HashEmbedder()).sync()[0]
    assert again.documents_unchanged == len(names) and again.chunks_written == 0


def test_kill_minus_nine_at_random_points_converges(tmp_path):
    rng = random.Random(int(os.environ.get("BASTION_CRASH_SEED", "20261122")))
    rounds = int(os.environ.get("BASTION_CRASH_ROUNDS", "15"))
    docs = tmp_path / "docs"
    docs.mkdir()
    names: list[str] = []
    config = "[ingest]\nbatch_chunks = 6\n[chunking]\nmax_tokens = 64\noverlap_tokens = 8\n"
    home = tmp_path / "ws"
    _workspace(home, docs, config)
    reference = _workspace(tmp_path / "reference", docs, config)  # never crashes
    for _ in range(4):
        _mutate(rng, docs, names)

    kill_and_recover(rng, rounds, home, reference, docs, names)
