"""Build an LLM from a registered model, through the ``bastion.llms`` entry-point group."""
from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from bastion.core.config import LLMConfig
from bastion.core.errors import ConfigError
from bastion.generation.models import ModelInfo
from bastion.generation.protocol import LLM

_KIND_BACKEND = {"gguf": "llamacpp", "http": "openai"}


def _backend(name: str) -> Callable[..., LLM]:
    for ep in entry_points(group="bastion.llms"):
        if ep.name == name:
            backend: Callable[..., LLM] = ep.load()
            return backend
    raise ConfigError(f"no LLM backend {name!r} is installed (entry-point group 'bastion.llms')")


def build_llm(info: ModelInfo, cfg: LLMConfig, *, adapter: tuple[str, Path, str] | None = None) -> LLM:
    """The LLM of a registered model; ``adapter`` = (name, GGUF file, sha256) of a LoRA adapter to apply."""
    cls = _backend(_KIND_BACKEND[info.kind])
    window = cfg.context_window or info.context_window or 4096
    if adapter is not None and info.kind != "gguf":
        raise ConfigError(f"adapter {adapter[0]!r}: adapters run on in-process GGUF models; for a model behind a URL, "
                          "load the adapter into that server (e.g. vLLM --lora-modules) and register it as its own model")
    if info.kind == "gguf":
        extra = {"lora": [(adapter[1], 1.0, adapter[2])]} if adapter is not None else {}
        path, sha256 = info.path, info.sha256
        if cfg.weights != "shipped":  # a verified re-encoded copy, made on first use
            from bastion.generation.reencode import weights_for

            path, sha256 = weights_for(info, cfg.weights, threads=cfg.threads)
        return cls(path, name=info.name, sha256=sha256, context_window=window, threads=cfg.threads,
                   runtime=cfg.runtime, prompt_cache=cfg.prompt_cache, **extra)
    return cls([info.url, *cfg.urls], info.served_name, name=info.name, api_key_env=info.api_key_env,
               context_window=window, timeout_s=cfg.timeout_s, retries=cfg.retries,
               connect_timeout_s=cfg.connect_timeout_s, first_token_timeout_s=cfg.first_token_timeout_s,
               idle_timeout_s=cfg.idle_timeout_s, cooldown_s=cfg.cooldown_s)
