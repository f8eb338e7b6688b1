"""Build the configured embedder from the ``bastion.embedders`` entry-point group.

Built-in backends register there exactly as a third-party package would, and are built the
same way, so ``embedder.backend = "mycompany"`` works once such a package is installed: the
backend's class is called with the ``[embedder]`` settings its constructor names (all of them,
``backend`` aside, when it takes ``**kwargs``); settings left unset are not passed.
"""
from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from bastion.core.config import EmbedderConfig
from bastion.core.errors import ConfigError
from bastion.embedding.protocol import Embedder

GROUP = "bastion.embedders"


def available_backends() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def build_embedder(cfg: EmbedderConfig) -> Embedder:
    backends = available_backends()
    if cfg.backend not in backends:
        raise ConfigError(f"unknown embedder.backend {cfg.backend!r}; installed backends: {sorted(backends)}")
    cls = backends[cfg.backend].load()
    embedder: Embedder = cls(**_arguments(cls, cfg.model_dump(exclude={"backend"}, exclude_none=True)))
    return embedder


def _arguments(cls: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings ``cls`` takes: those its constructor names, or all when it takes ``**kwargs``."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return settings
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in settings.items() if k in named}
