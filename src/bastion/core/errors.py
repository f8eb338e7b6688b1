"""The Bastion exception tree.

::

    BastionError                 root: catch this to catch everything Bastion raises
    ├── ConfigError              bastion.toml / environment / CLI option is invalid
    ├── WorkspaceError           no workspace where one was expected, or already one
    ├── CatalogError             the relational catalog cannot be read or migrated
    ├── AccessError              unknown user or malformed principal
    │   └── AuthError            a credential is missing, invalid, revoked or expired
    ├── IngestError              a source cannot be read at all (per-document problems
    │   │                        are recorded, not raised)
    │   ├── ParseError           one document cannot be parsed (recorded per document)
    │   └── SyncInterrupted      a sync was asked to stop (Ctrl-C, SIGTERM); what it
    │                            committed stays, the rest is synced next time
    ├── EmbeddingError           the embedder failed or is misconfigured
    │   └── MissingExtraError    an optional dependency is not installed
    ├── StoreError               the chunk index failed
    │   └── EmbedderMismatch     the index was built with another embedder / dimension
    └── GenerationError          answering failed
        ├── ModelError           a model is unknown, missing, or its file fails its sha256
        └── LLMUnavailable       the LLM server cannot be reached or keeps failing

Every message quotes the bad value and says what to do.
"""
from __future__ import annotations


class BastionError(Exception):
    """Root of every error Bastion raises on purpose."""


class ConfigError(BastionError):
    """Invalid configuration (file, environment or CLI option)."""


class WorkspaceError(BastionError):
    """A workspace is missing, or one already exists where a new one was asked for."""


class CatalogError(BastionError):
    """The catalog database cannot be opened, read or migrated."""


class AccessError(BastionError):
    """An unknown user or a malformed principal string."""


class AuthError(AccessError):
    """A credential (API key, token, password, session) is missing, invalid, revoked or expired."""


class IngestError(BastionError):
    """A whole source cannot be read (missing folder, unreachable database)."""


class ParseError(IngestError):
    """One document cannot be parsed: corrupt, encrypted, empty or oversize."""


class SyncInterrupted(IngestError):
    """A sync stopped at a safe point because it was asked to; ``committed`` documents were published."""

    def __init__(self, message: str, *, committed: int = 0):
        super().__init__(message)
        self.committed = committed


class EmbeddingError(BastionError):
    """The embedder failed or is misconfigured."""


class MissingExtraError(EmbeddingError):
    """An optional dependency is missing; the message names the extra to install."""


class StoreError(BastionError):
    """The chunk index failed."""


class EmbedderMismatch(StoreError):
    """The index was built with a different embedder id or vector dimension."""


class GenerationError(BastionError):
    """Answering failed (prompt, model or LLM problem)."""


class ModelError(GenerationError):
    """A model is unknown or missing, or its file does not match its pinned sha256."""


class LLMUnavailable(GenerationError):
    """The LLM server cannot be reached, timed out, or kept failing after retries."""
