"""Ctrl-C and SIGTERM end a ``bastion sync`` process within about a second: it says how many documents
it committed, exits 130 / 143, opens no alert, and the next sync completes the rest.

The sync runs as a real ``bastion`` process (the CLI's own code, ``main()``) on an embedder that
sleeps, so the signal lands mid-sync: between embedding batches (the sync stops at its next safe
point and records the run as interrupted), or inside one that takes 60 s (the process ends without
waiting for it; the batch is redone next time).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import write

CHILD = """
import sys, time
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

home, fast, slow = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])

class SlowEmbedder(HashEmbedder):
    def embed_passages(self, texts):
        time.sleep(fast if self.calls == 0 else slow)  # the first batch quick, then each takes `slow`
        return super().embed_passages(texts)

cli._ws = lambda: Workspace.open(home, embedder=SlowEmbedder())
sys.argv = ["bastion", "sync", "--progress-jsonl"]
cli.main()
"""
CONFIG = "[ingest]\nbatch_chunks = 4\n[embedder]\nbatch_size = 2\n"
DOCS = 24


def _workspace(tmp_path: Path) -> Path:
    for i in range(DOCS):
        write(tmp_path / "docs" / f"note{i:02}.md", f"# Note {i}\n\nThe canteen serves dish number {i} on day {i}.\n")
    home = tmp_path / "ws"
    Workspace.init(home)
    (home / "bastion.toml").write_text(CONFIG, encoding="utf-8")
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", tmp_path / "docs", acl="everyone")
    ws.close()
    return home


def _interrupt(home: Path, sig: int, *, fast: float, slow: float, after_embeds: int) -> tuple[int, str, float]:
    """Start the sync, send ``sig`` once ``after_embeds`` embedding batches are done; (exit code, stderr
    without progress lines, seconds from the signal to the exit)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(fast), str(slow)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=os.environ | {"COLUMNS": "200"})
    assert child.stderr is not None
    embeds, other = 0, []
    for line in child.stderr:
        if '"stage": "embed"' in line:
            embeds += 1
            if embeds >= after_embeds:
                break
        elif not line.startswith('{"stage"'):
            other.append(line)
    assert embeds >= after_embeds, "".join(other)
    sent = time.monotonic()
    child.send_signal(sig)
    try:
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    took = time.monotonic() - sent
    return child.returncode, "".join(other) + "\n".join(ln for ln in err.splitlines()
                                                          if not ln.startswith('{"stage"')), took


def _monitor_status(home: Path, monkeypatch) -> dict:
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    r = CliRunner().invoke(cli.app, ["--home", str(home), "monitor", "status", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _resync(home: Path, monkeypatch) -> dict:
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    r = CliRunner().invoke(cli.app, ["--home", str(home), "sync", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_ctrl_c_stops_at_a_safe_point_keeps_what_is_committed_and_opens_no_alert(tmp_path, monkeypatch):
    home = _workspace(tmp_path)
    code, err, took = _interrupt(home, signal.SIGINT, fast=0.0, slow=0.3, after_embeds=4)
    assert code == 130, err
    assert took < 3.0, f"took {took:.1f}s to stop"
    assert "sync interrupted (SIGINT);" in err and "the rest will be synced next time" in err
    committed = int(err.split("(SIGINT); ")[1].split(" document")[0])
    assert committed >= 1  # four embedding batches of two chunks: at least one batch of four was committed
    assert "Traceback" not in err and "KeyboardInterrupt" not in err

    status = _monitor_status(home, monkeypatch)
    assert status["alerts"] == []  # a user's Ctrl-C is not a failure of the source
    assert status["sources"][0]["last_run"]["status"] == "interrupted"

    report = _resync(home, monkeypatch)
    assert report["documents_failed"] == 0
    assert report["documents_added"] == DOCS - committed and report["documents_unchanged"] == committed
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert len({h.path for h in ws.search("canteen dish", ws.principal("bob"), 50, mode="bm25")}) == DOCS
    assert _monitor_status(home, monkeypatch)["alerts"] == []


def test_sigterm_during_a_long_native_call_ends_the_process_within_a_second(tmp_path, monkeypatch):
    home = _workspace(tmp_path)
    code, err, took = _interrupt(home, signal.SIGTERM, fast=0.0, slow=60.0, after_embeds=1)
    assert code == 143, err
    assert took < 3.0, f"took {took:.1f}s to stop"
    assert "sync interrupted (SIGTERM); 0 documents committed, the rest will be synced next time" in err

    status = _monitor_status(home, monkeypatch)
    assert status["alerts"] == []
    assert status["sources"][0]["last_run"]["status"] == "interrupted"  # recorded before the process ended
    report = _resync(home, monkeypatch)
    assert report["documents_added"] == DOCS and report["documents_failed"] == 0
