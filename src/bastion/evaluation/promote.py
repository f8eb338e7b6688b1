"""Writing a configuration into ``bastion.toml`` as the workspace's defaults.

Only the settings a configuration holds are touched, comments and everything else stay as they
are (tomlkit edits the document in place); the new file is written beside the old and moved over
it, so a crash leaves one or the other. A ``BASTION_*`` environment variable still overrides what
the file says.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError

from bastion.core.config import CONFIG_FILE, WorkspaceConfig
from bastion.core.errors import ConfigError
from bastion.evaluation.configs import EvalConfig

# configuration field -> (table, key) in bastion.toml
TARGETS = {
    "model": ("llm", "model"),
    "approach": ("answer", "mode"),
    "search_mode": ("search", "mode"),
    "k": ("answer", "max_passages"),
    "max_passages": ("answer", "prompt_passages"),
    "prompt": ("answer", "prompt"),
    "min_evidence": ("answer", "min_evidence"),
}


def write_defaults(home: Path, spec: EvalConfig) -> dict[str, Any]:
    """Set the workspace's defaults to ``spec`` (resolved); returns ``{"table.key": [old, new]}`` changed."""
    path = home / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    doc = tomlkit.parse(text)
    changed: dict[str, Any] = {}
    for field, (table, key) in TARGETS.items():
        value = getattr(spec, field)
        if value is None:
            continue
        section = doc.get(table)
        if section is None:
            section = tomlkit.table()
            doc[table] = section
        old = section.get(key)
        if old != value:
            section[key] = value
            changed[f"{table}.{key}"] = [None if old is None else _plain(old), value]
    if not changed:
        return changed
    new_text = tomlkit.dumps(doc)
    try:
        WorkspaceConfig.model_validate(tomllib.loads(new_text))
    except (ValidationError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"promoting would make {path} invalid ({exc}); nothing was changed") from None
    tmp = path.with_name(path.name + ".promote")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, path)
    return changed


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


__all__ = ["TARGETS", "write_defaults"]
