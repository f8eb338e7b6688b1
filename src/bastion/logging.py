"""Structured logs: an event name plus fields, one JSON object per line on stderr.

Silent unless ``BASTION_LOG`` is set (``BASTION_LOG=1``), so the CLI's own output stays clean.
"""
from __future__ import annotations

import json
import os
import sys
import time


def log(event: str, **fields) -> None:
    if not os.environ.get("BASTION_LOG"):
        return
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    sys.stderr.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
