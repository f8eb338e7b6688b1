"""Structured events go through stdlib logging as one JSON object per line, only with BASTION_LOG."""
from __future__ import annotations

import json

from bastion.events import log


def test_events_are_json_lines_on_stderr_only_when_enabled(monkeypatch, capsys):
    monkeypatch.delenv("BASTION_LOG", raising=False)
    log("sync.done", source="docs")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("BASTION_LOG", "1")
    log("sync.done", source="docs", seconds=1.5)
    record = json.loads(capsys.readouterr().err)
    assert record["event"] == "sync.done" and record["source"] == "docs" and record["seconds"] == 1.5
    assert isinstance(record["ts"], float)
