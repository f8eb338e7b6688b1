"""Ctrl-C on the real ``bastion sync`` with the default embedder: the signal lands while the model embeds
(a native call Python cannot interrupt), and the process still ends within about a second, exit 130,
saying what it kept; no alert is opened, and the next sync completes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import write

pytestmark = pytest.mark.model

CONFIG = "[ingest]\nbatch_chunks = 4\n[embedder]\nbatch_size = 4\n"


def bastion(home, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bastion.cli.app", "--home", str(home), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"COLUMNS": "200"}, **kw)


def run(home, *args: str) -> tuple[int, str, str]:
    p = bastion(home, *args)
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def test_ctrl_c_while_the_model_embeds(tmp_path):
    for i in range(16):
        write(tmp_path / "docs" / f"policy{i:02}.md", f"# Policy {i}\n\n" + "\n\n".join(
            f"Section {j} of policy {i}: staff submit travel receipts within {j + 10} days, and the hotel "
            f"cap is {100 + i} euro per night in city {j}." for j in range(4)))
    home = tmp_path / "ws"
    assert run(home, "init", str(home))[0] == 0
    (home / "bastion.toml").write_text(CONFIG, encoding="utf-8")
    assert run(home, "source", "add", "docs", "--path", str(tmp_path / "docs"), "--acl", "everyone")[0] == 0

    sync = bastion(home, "sync", "--progress-jsonl")
    assert sync.stderr is not None
    for line in sync.stderr:  # the model has embedded a first batch and is embedding the next
        if '"stage": "embed"' in line:
            break
    sent = time.monotonic()
    sync.send_signal(signal.SIGINT)
    _, err = sync.communicate(timeout=60)
    took = time.monotonic() - sent
    assert sync.returncode == 130, err
    assert took < 3.0, f"took {took:.1f}s to stop"
    assert "sync interrupted (SIGINT);" in err and "the rest will be synced next time" in err

    code, out, _ = run(home, "monitor", "status", "--json")
    status = json.loads(out)
    assert code == 0 and status["alerts"] == []
    assert status["sources"][0]["last_run"]["status"] == "interrupted"
    code, out, err = run(home, "sync", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["documents_added"] + report["documents_unchanged"] == 16 and report["documents_failed"] == 0
