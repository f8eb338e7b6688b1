"""Where the workspace is: ``--home``, else ``BASTION_HOME``, else the current folder.

Its own module so that a command can find the workspace without importing what opens it.
"""
from __future__ import annotations

import os
from pathlib import Path


def resolve_home(home: str | Path | None) -> Path:
    """``--home``, else ``BASTION_HOME``, else the current folder."""
    return Path(home or os.environ.get("BASTION_HOME") or ".").expanduser().resolve()
