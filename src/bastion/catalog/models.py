"""Catalog tables (SQLAlchemy 2 declarative). Changes need an Alembic revision."""
from __future__ import annotations

from datetime import UTC, datetime

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
from sqlalchemy import true as sa_true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def utc_iso(value: datetime | None) -> str | None:
    """A catalog timestamp (naive UTC) as ISO 8601 to the second with ``Z``; None stays None."""
    return value.isoformat(timespec="seconds") + "Z" if value else None


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
    # text statistics of this version (bastion.monitoring.quality.text_stats), for source-level quality
    stats: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestRunRow(Base):
    __tablename__ = "ingest_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str | None] = mapped_column(String(200))
    # running | completed | interrupted | failed | quarantined (checks failed: nothing published)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    embedder_id: Mapped[str] = mapped_column(String(200))
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    errors: Mapped[list] = mapped_column(JSON, default=list)
    # what the sync measured: freshness, volume, schema, quality, drift (docs/monitoring.md)
    metrics: Mapped[dict | None] = mapped_column(JSON)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # where the user comes from: "local" (bastion user add, the UI), "ldap", "scim" or "oidc",
    # and its id there; a disabled user (active false) can neither sign in nor use a key
    origin: Mapped[str] = mapped_column(String(20), default="local", server_default="local")
    external_id: Mapped[str | None] = mapped_column(String(400))
    email: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(default=True, server_default=sa_true())
    updated_at: Mapped[datetime | None] = mapped_column()


class GroupRow(Base):
    __tablename__ = "groups"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    origin: Mapped[str] = mapped_column(String(20), default="local", server_default="local")
    external_id: Mapped[str | None] = mapped_column(String(400))
    display_name: Mapped[str | None] = mapped_column(String(400))
    updated_at: Mapped[datetime | None] = mapped_column()


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


class AccountRow(Base):
    """A user's role and login state (the user and groups live in ``users`` / ``memberships``)."""

    __tablename__ = "accounts"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), default="member")  # admin | editor | member
    password_hash: Mapped[str | None] = mapped_column(Text)  # argon2id
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    last_login_at: Mapped[datetime | None] = mapped_column()


class LoginFailureRow(Base):
    """Failed logins of one (user name, client address) pair or one address, shared by every server
    on the catalog (bastion.login_throttle). Keyed by a sha256, so neither name nor address is stored."""

    __tablename__ = "login_failures"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # pair | address
    user_hash: Mapped[str | None] = mapped_column(String(64), index=True)  # sha256 of the user name (pairs)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[float] = mapped_column(Float, index=True)  # seconds since the epoch
    locked_until: Mapped[float] = mapped_column(Float, default=0.0)


class LeaseRow(Base):
    """A named lease shared by every process on the catalog (bastion.leases): who holds it, until when."""

    __tablename__ = "leases"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # seconds since the epoch


class ApiKeyRow(Base):
    """An API key: only the sha256 of its secret is stored; the key is shown once."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class WebSessionRow(Base):
    """A web UI login: the cookie carries the token, the catalog its sha256."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ip: Mapped[str | None] = mapped_column(String(100))


class AuditRow(Base):
    """One audited event. Append-only: database triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str | None] = mapped_column(String(200), index=True)  # user id, None when unknown
    via: Mapped[str] = mapped_column(String(20))  # key | jwt | session | password | cli
    ip: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(80), index=True)  # e.g. search, ask, user.add, login
    target: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20))  # ok | denied | failed | error
    lineage_id: Mapped[str | None] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class FeedbackRow(Base):
    """A user's verdict on one answer, kept with its lineage id for later training datasets."""

    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lineage_id: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    rating: Mapped[int] = mapped_column(Integer)  # +1 | -1
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncJobRow(Base):
    """A sync started over the API, run in the background."""

    __tablename__ = "sync_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # queued | running | completed | failed
    started_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    report: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    upload_path: Mapped[str | None] = mapped_column(String(1000))  # the file an upload put in the source


class AlertRow(Base):
    """A data-observability alert: open -> acknowledged -> resolved; one unresolved per (source, check)."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # freshness | volume | schema | quality | drift | parse
    check_name: Mapped[str] = mapped_column(String(300))  # e.g. volume.removed, quality.garbled
    severity: Mapped[str] = mapped_column(String(10))  # warn | hard
    status: Mapped[str] = mapped_column(String(20))  # open | acknowledged | resolved
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    run_id: Mapped[int | None] = mapped_column(Integer)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[datetime | None] = mapped_column()
    resolved_by: Mapped[str | None] = mapped_column(String(200))  # None: resolved by a healthy check


class AlertDeliveryRow(Base):
    """The webhook outbox: one row per (alert event, webhook URL) until delivered."""

    __tablename__ = "alert_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer)
    event: Mapped[str] = mapped_column(String(20))  # opened | acknowledged | resolved
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)


class SourceSchemaRow(Base):
    """The accepted columns of a source's table, CSV or sheet; a difference is a schema alert."""

    __tablename__ = "source_schemas"
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    object: Mapped[str] = mapped_column(Text, primary_key=True)
    columns: Mapped[list] = mapped_column(JSON)
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[int | None] = mapped_column(Integer)


class EmbedderCanaryRow(Base):
    """Vectors of fixed probe sentences from an embedder's first use: re-embedded each sync to catch a
    model that changed behind the same id (e.g. an endpoint serving another model)."""

    __tablename__ = "embedder_canaries"
    embedder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    dimension: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalSetRow(Base):
    """One version of a named question set; its ACL is a list of document ACLs, all of which a
    reader must pass (the set quotes every one of those documents)."""

    __tablename__ = "eval_sets"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(40))  # import | generate | feedback
    acl: Mapped[list] = mapped_column(JSON, default=list)  # [[label, ...], ...]: every list must admit the reader
    default_asker: Mapped[str | None] = mapped_column(String(200))
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalItemRow(Base):
    __tablename__ = "eval_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("eval_sets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    question: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20))  # answerable | unanswerable | forbidden
    answers: Mapped[list] = mapped_column(JSON, default=list)
    document: Mapped[str | None] = mapped_column(Text)
    sentence: Mapped[str | None] = mapped_column(Text)
    asker: Mapped[str | None] = mapped_column(String(200))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)


class EvalConfigRow(Base):
    """A named evaluation configuration: model, approach, retrieval and prompt settings."""

    __tablename__ = "eval_configs"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    spec: Mapped[dict] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EvalRunRow(Base):
    """One evaluation run of a set version under one or more configurations."""

    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    set_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(20))  # running | completed | failed
    trigger: Mapped[str] = mapped_column(String(80))  # cli | api | schedule | change | sync:<source> | promote
    started_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column()
    configs: Mapped[list] = mapped_column(JSON, default=list)  # [{name, spec, fingerprint, metrics}]
    comparison: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)


class EvalResultRow(Base):
    """What one item gave under one configuration of a run."""

    __tablename__ = "eval_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    config: Mapped[str] = mapped_column(String(200))
    item_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[dict] = mapped_column(JSON)
    scores: Mapped[dict] = mapped_column(JSON)


class EvalPinRow(Base):
    """A regression set: run after model, prompt, configuration and large source changes and on a
    schedule; a drop beyond ``tolerance`` on a pinned metric opens an ``answer_quality`` alert."""

    __tablename__ = "eval_pins"
    set_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    config: Mapped[str] = mapped_column(String(200), default="current")
    metrics: Mapped[list] = mapped_column(JSON)
    tolerance: Mapped[float] = mapped_column(Float)
    every: Mapped[str | None] = mapped_column(String(40))  # a duration, e.g. 1d; None: only after changes
    sync_change: Mapped[float] = mapped_column(Float)  # share of a source a sync must change to trigger a run
    baseline_run_id: Mapped[str | None] = mapped_column(String(32))
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    last_run_at: Mapped[datetime | None] = mapped_column()
    last_fingerprint: Mapped[str | None] = mapped_column(String(64))
    pinned_by: Mapped[str | None] = mapped_column(String(200))
    pinned_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalCandidateRow(Base):
    """An admin's decision on a rated answer offered as a question-set item."""

    __tablename__ = "eval_candidates"
    feedback_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # accepted | rejected
    set_name: Mapped[str | None] = mapped_column(String(200))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class AdapterRow(Base):
    """A LoRA adapter of a base model, usable only by principals its audience admits.

    ``status``: candidate (trained, not serving) -> active (serving its audience) -> retired (replaced
    or rolled back), or withdrawn (a training document was deleted or restricted since training).
    """

    __tablename__ = "adapters"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    audience: Mapped[list] = mapped_column(JSON)  # principal labels; a principal matching any may use it
    dataset: Mapped[str | None] = mapped_column(String(200))
    documents: Mapped[list] = mapped_column(JSON, default=list)  # [{doc_id, version_id, path, acl}] trained on
    training: Mapped[dict] = mapped_column(JSON, default=dict)  # configuration and result of the run
    evaluation: Mapped[dict] = mapped_column(JSON, default=dict)  # before / after runs and their metrics
    status: Mapped[str] = mapped_column(String(20), default="candidate")
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column()
    promoted_by: Mapped[str | None] = mapped_column(String(200))


class ConversationRow(Base):
    """A user's saved conversation (the web UI's history); read and changed only by that user."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationTurnRow(Base):
    """One question of a conversation and the answer it got, with the answer's citations as given then
    (shown later only as far as the reader may still read them: bastion.conversations)."""

    __tablename__ = "conversation_turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    citations: Mapped[list] = mapped_column(JSON, default=list)
    decision: Mapped[str] = mapped_column(String(40))
    message: Mapped[str | None] = mapped_column(Text)
    lineage_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
