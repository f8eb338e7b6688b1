"""Catalog tables (SQLAlchemy 2 declarative). Changes need an Alembic revision."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SourceRow(Base):
    __tablename__ = "sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentRow(Base):
    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("source_id", "key"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(Text)
    uri: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    acl: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|active|failed|deleted
    current_version_id: Mapped[str | None] = mapped_column(String(64))
    # what the last sync saw of this document (indexed or failed), for cheap change checks
    seen_hash: Mapped[str | None] = mapped_column(String(64))
    seen_size: Mapped[int | None] = mapped_column(Integer)
    seen_mtime: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DocumentVersionRow(Base):
    __tablename__ = "document_versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float | None] = mapped_column(Float)
    parser: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))  # pending|indexed|failed|superseded
    error: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestRunRow(Base):
    __tablename__ = "ingest_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running|completed|interrupted|failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    embedder_id: Mapped[str] = mapped_column(String(200))
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    errors: Mapped[list] = mapped_column(JSON, default=list)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GroupRow(Base):
    __tablename__ = "groups"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MembershipRow(Base):
    __tablename__ = "memberships"
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(
        ForeignKey("groups.name", ondelete="CASCADE"), primary_key=True
    )


class EmbeddingCacheRow(Base):
    __tablename__ = "embedding_cache"
    embedder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    text_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ModelRow(Base):
    """A language model the workspace may answer with: a GGUF file or an HTTP endpoint."""

    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # gguf | http
    path: Mapped[str | None] = mapped_column(Text)  # gguf: the file
    sha256: Mapped[str | None] = mapped_column(String(64))  # gguf: pinned digest, checked on load
    size: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)  # http: base URL ending in /v1
    served_name: Mapped[str | None] = mapped_column(String(200))  # http: the server's model name
    api_key_env: Mapped[str | None] = mapped_column(String(200))
    context_window: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(200))  # "pack:<package>==<version>" or "user"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AnswerCacheRow(Base):
    """Answers keyed by question + evidence (chunk ids and versions) + model + prompt + decoding."""

    __tablename__ = "answer_cache"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    answer: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LineageRow(Base):
    """One answer's trace. Append-only: database triggers refuse UPDATE and DELETE."""

    __tablename__ = "answer_lineage"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    principal: Mapped[list] = mapped_column(JSON)  # the labels the query ran with
    question: Mapped[str] = mapped_column(Text)
    rewritten_question: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str] = mapped_column(String(40))  # answered | abstained | extractive
    reason: Mapped[str | None] = mapped_column(Text)
    record: Mapped[dict] = mapped_column(JSON)  # retrieval, prompt, model, decoding, checks, timings, tokens
