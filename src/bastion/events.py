"""Structured events: an event name plus fields, one JSON object per line on stderr.

Events are records of the ``bastion.events`` logger of the standard :mod:`logging` module,
formatted by :class:`JsonFormatter`. They are silent unless ``BASTION_LOG`` is set
(``BASTION_LOG=1``), so the CLI's own output stays clean.

>>> record = LOGGER.makeRecord(LOGGER.name, logging.INFO, __file__, 1, "sync.done", None, None,
...                            extra={"fields": {"source": "docs"}})
>>> JsonFormatter().format(record).split(", ", 1)[1]
'"event": "sync.done", "source": "docs"}'
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, TextIO

__all__ = ["LOGGER", "JsonFormatter", "log"]

LOGGER = logging.getLogger("bastion.events")


class JsonFormatter(logging.Formatter):
    """``{"ts": <unix seconds>, "event": <message>, **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return json.dumps({"ts": round(record.created, 3), "event": record.getMessage(), **fields},
                          ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the ``sys.stderr`` of the moment (a test or a redirect may have replaced it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())

    @property  # StreamHandler keeps the stream in an attribute; this one reads it when writing
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


LOGGER.addHandler(_StderrHandler())
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # events are their own stream, not part of the host application's log


def log(event: str, **fields: Any) -> None:
    """Emit ``event`` with ``fields`` when ``BASTION_LOG`` is set."""
    if not os.environ.get("BASTION_LOG"):
        return
    LOGGER.info(event, extra={"fields": fields})
