"""Secrets live only in the environment; configuration names the variable."""
from __future__ import annotations

import os


def bearer_header(api_key_env: str | None, setting: str, error: type[Exception]) -> dict[str, str]:
    """``{"Authorization": "Bearer <key>"}`` from the variable ``api_key_env`` names, or ``{}``
    when none is configured; ``error`` names ``setting`` when the variable is unset."""
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise error(f"environment variable {api_key_env!r} ({setting}) is not set")
    return {"Authorization": f"Bearer {key}"}
