"""A workspace: ``bastion.toml`` plus a data folder holding the catalog and the index.

The Python API the CLI and the HTTP API are thin layers over.

>>> ws = Workspace.init("/tmp/ws")                                  # doctest: +SKIP
>>> ws.directory.add_user("alice", groups=["finance"])               # doctest: +SKIP
>>> ws.sources.add_folder("docs", "examples/corpus", acl="everyone")  # doctest: +SKIP
>>> ws.sync()                                                        # doctest: +SKIP
>>> ws.search("travel hotel cap", ws.principal("alice"))             # doctest: +SKIP
"""
from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.catalog.db import Catalog
from bastion.core.config import CONFIG_FILE, DEFAULT_TOML, WorkspaceConfig, load_config
from bastion.core.errors import BastionError, ConfigError, SyncInterrupted, WorkspaceError
from bastion.core.home import resolve_home
from bastion.core.types import Hit, Principal
from bastion.directory import Directory
from bastion.sources import SourceRegistry

if TYPE_CHECKING:  # the modules behind these types load on first use; importing bastion stays cheap
    from bastion.accounts import Accounts
    from bastion.audit import AuditLog
    from bastion.conversations import Conversations
    from bastion.core.config import AnswerConfig, AssistantConfig
    from bastion.documents import DocumentCatalog
    from bastion.embedding.protocol import Embedder
    from bastion.evaluation.service import Evaluation
    from bastion.generation.answer import Answerer, Assistant
    from bastion.generation.models import ModelRegistry
    from bastion.generation.protocol import LLM, ChatMessage, OnToken
    from bastion.generation.results import Answer
    from bastion.ingest.control import SyncControl
    from bastion.ingest.pipeline import Progress
    from bastion.ingest.report import SyncReport
    from bastion.ingest.status import IndexStatus
    from bastion.monitoring.monitor import Monitor
    from bastion.stores.lance import LanceStore
    from bastion.stores.pgvector import PgVectorStore
    from bastion.tuning.adapters import Adapter, AdapterRegistry
    from bastion.tuning.service import Tuning


class Workspace:
    """One Bastion installation's state."""

    def __init__(self, home: Path, config: WorkspaceConfig, *, embedder: Embedder | None = None):
        self.home = home
        self.config = config
        self.data_dir = home / "data"
        self._embedder = embedder
        self.embedder_injected = embedder is not None  # an embedder object, not the configured one
        self._llm_override: LLM | None = None  # use_llm()
        self._adapter_overrides: dict[str, LLM] = {}  # use_llm(adapters=...)
        self._llms: dict[str, LLM] = {}  # model name -> loaded LLM
        self._llm_lock = threading.Lock()
        self._store: LanceStore | PgVectorStore | None = None
        self._store_lock = threading.Lock()  # one store per workspace, whichever thread opens it first
        self._embedder_lock = threading.Lock()
        self._answerers: dict[str, Assistant] = {}  # assistant name -> its answerer and sources

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def init(cls, home: str | Path | None = None, *, exist_ok: bool = False) -> Workspace:
        path = resolve_home(home)
        if (path / CONFIG_FILE).exists() and not exist_ok:
            raise WorkspaceError(f"{path} already holds a workspace ({CONFIG_FILE} exists)")
        path.mkdir(parents=True, exist_ok=True)
        (path / "data").mkdir(exist_ok=True)
        if not (path / CONFIG_FILE).exists():
            (path / CONFIG_FILE).write_text(DEFAULT_TOML, encoding="utf-8")
        ws = cls.open(path)
        ws._create_catalog()
        return ws

    @classmethod
    def open(cls, home: str | Path | None = None, *, embedder: Embedder | None = None) -> Workspace:
        path = resolve_home(home)
        if not (path / CONFIG_FILE).exists():
            raise WorkspaceError(
                f"no Bastion workspace at {path} (no {CONFIG_FILE}); create one with `bastion init {path}` "
                "or point BASTION_HOME / --home at an existing one"
            )
        return cls(path, load_config(path), embedder=embedder)

    @cached_property
    def catalog(self) -> Catalog:
        """The catalog database, created and migrated to the current schema when first opened."""
        self.data_dir.mkdir(exist_ok=True)
        return Catalog.for_workspace(self.data_dir, self.config.catalog)

    def _create_catalog(self) -> Catalog:
        """Open the catalog now (``init``) rather than on first use: opening creates the database
        and migrates it to the current schema."""
        return self.catalog

    @cached_property
    def directory(self) -> Directory:
        return Directory(self.catalog, self.accounts)

    @cached_property
    def sources(self) -> SourceRegistry:
        return SourceRegistry(self.catalog, self.config.ingest, cache_root=self.data_dir / "connectors")

    @cached_property
    def documents(self) -> DocumentCatalog:
        """Documents as a principal may read them, and feedback on answers."""
        from bastion.documents import DocumentCatalog

        return DocumentCatalog(self.catalog)

    @cached_property
    def accounts(self) -> Accounts:
        """Roles, passwords, API keys and web sessions (lockout settings from ``[auth]``)."""
        from bastion.accounts import Accounts

        a = self.config.auth
        return Accounts(self.catalog, max_failures=a.max_failed_logins, lockout_base_s=a.lockout_base_s,
                        lockout_max_s=a.lockout_max_s, max_failures_per_address=a.max_failed_logins_per_address,
                        failure_window_s=a.failed_login_window_s)

    @cached_property
    def audit(self) -> AuditLog:
        """The append-only audit log."""
        from bastion.audit import AuditLog

        return AuditLog(self.catalog)

    @cached_property
    def evaluation(self) -> Evaluation:
        """Question sets, configurations, evaluation runs, promotion and pinned regression sets."""
        from bastion.evaluation.service import Evaluation

        return Evaluation(self)

    @cached_property
    def conversations(self) -> Conversations:
        """Each user's saved conversations, shown as far as they may still read what answers cited."""
        from bastion.conversations import Conversations

        return Conversations(self.catalog)

    @cached_property
    def monitor(self) -> Monitor:
        """Data-observability checks and alerts (``[monitoring]``), with webhook delivery."""
        from bastion.monitoring.monitor import Monitor
        from bastion.monitoring.notify import Notifier

        m = self.config.monitoring
        return Monitor(self.catalog, m, Notifier(self.catalog, m.webhooks, workspace=self.home.name))

    def principal(self, user_id: str) -> Principal:
        """The principal of a known user, with their current groups."""
        return self.directory.principal(user_id)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._embedder_lock:  # the server's index warmer and a first request may both ask
                if self._embedder is None:
                    from bastion.embedding.factory import build_embedder

                    self._embedder = build_embedder(self.config.embedder)
        return self._embedder

    @property
    def store(self) -> LanceStore | PgVectorStore:
        with self._store_lock:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    def _open_store(self) -> LanceStore | PgVectorStore:
        from bastion.stores.lance import LanceStore

        if self.config.store.backend == "pgvector":  # [store]: PostgreSQL + pgvector (docs/pgvector.md)
            from bastion.stores.pgvector import open_store

            return open_store(self.config, self.embedder.id, self.embedder.dimension)
        s = self.config.search
        return LanceStore(self.data_dir / "index", embedder_id=self.embedder.id, dimension=self.embedder.dimension,
                          exact_threshold=s.exact_threshold, nprobes=s.nprobes, refine_factor=s.refine_factor,
                          ann_min_rows=self.config.index.ann_min_rows, exact_cache_mb=s.exact_cache_mb,
                          fragment_rows=self.config.index.fragment_rows, vector_index=self.config.index.vector_index)

    def close(self) -> None:
        for llm in self._llms.values():
            llm.close()
        self._llms.clear()
        if self._llm_override is not None:
            self._llm_override.close()
            self._llm_override = None
        if "catalog" in self.__dict__:
            self.catalog.close()
        if (close_store := getattr(self._store, "close", None)) is not None:  # the pgvector store's connections
            close_store()

    # -- sync ------------------------------------------------------------------------------
    @contextmanager
    def _sync_lock(self) -> Iterator[None]:
        self.data_dir.mkdir(exist_ok=True)
        with open(self.data_dir / "sync.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkspaceError("another sync is running in this workspace; wait for it to finish") from None
            from bastion.leases import catalog_lock  # and on another machine with this catalog (PostgreSQL)

            with catalog_lock(self.catalog, "sync") as held:
                if not held:
                    raise WorkspaceError("another sync is running on this catalog (another machine); wait for it "
                                         "to finish")
                yield  # the lock dies with the process, so a killed sync never blocks the next

    def sync(self, source: str | None = None, progress: Progress | None = None, *,
             accept: bool = False, control: SyncControl | None = None) -> list[SyncReport]:
        """Sync one source (by name) or all of them; returns one report per source.

        Each sync is checked before it is published (bastion.monitoring): one that fails its hard
        checks is quarantined (``report.status``) unless ``accept``; its alerts are in ``report.alerts``.
        ``control`` stops it at a safe point (``SyncInterrupted``: what was committed stays, no alert).
        """
        from bastion.chunking import Chunker
        from bastion.embedding.cache import CachedEmbedder
        from bastion.ingest.distributed import executor_for
        from bastion.ingest.pipeline import SyncPipeline

        sources = [self.sources.get(source)] if source else self.sources.list()
        if not sources:
            raise BastionError("no sources to sync; add one with `bastion source add NAME --path DIR`")
        c = self.config
        chunker = Chunker(self.embedder.count_tokens, c.chunking.max_tokens, c.chunking.overlap_tokens)
        pipeline = SyncPipeline(self.catalog, self.store, CachedEmbedder(self.embedder, self.catalog, c.embedder.batch_size), chunker,
                                batch_chunks=c.ingest.batch_chunks, optimize_every=c.index.optimize_every_chunks,
                                executor=executor_for(c.ingest, self.embedder if self.embedder_injected else c.embedder,
                                                      c.embedder.batch_size))
        reports: list[SyncReport] = []
        with self._sync_lock(), pipeline.executor:
            for row in sources:
                try:
                    report = pipeline.sync(row, self.sources.connector(row), progress, gate=self.monitor.gate,
                                           accept=accept, control=control)
                except (SyncInterrupted, KeyboardInterrupt):  # asked to stop: not a failure of the source
                    raise
                except BaseException:
                    self._check_failed_sync(row.name)
                    raise
                try:  # the embedder is probed only when this sync wrote new vectors (a re-sync embeds nothing)
                    assert report.run_id is not None  # every sync records its run first
                    report.alerts = self.monitor.after_sync(row.name, report.run_id,
                                                            embedder=self.embedder if report.chunks_embedded else None)
                except Exception as exc:  # noqa: BLE001 - the sync itself is done and published; say the checks failed
                    report.errors.append({"file": None, "reason": f"data checks failed: {type(exc).__name__}: {exc}"})
                reports.append(report)
        self._withdraw_stale_adapters(reports)
        self._evaluate_after_sync(reports)
        return reports

    def _withdraw_stale_adapters(self, reports: list[SyncReport]) -> None:
        try:
            withdrawn = self.check_adapters()
        except Exception as exc:  # noqa: BLE001 - the sync is done and published; say the check failed
            for r in reports:
                r.errors.append({"file": None, "reason": f"adapter check failed: {type(exc).__name__}: {exc}"})
            return
        if withdrawn:
            alerts = [a for a in self.monitor.alerts() if a["kind"] == "adapter" and a["status"] == "open"]
            for r in reports:
                r.alerts.extend(alerts)

    def _evaluate_after_sync(self, reports: list[SyncReport]) -> None:
        """Run the pinned regression sets a sync changed enough; their alerts join the reports."""
        from bastion.evaluation.regression import ALERT_CHECK, ALERT_PREFIX

        try:
            results = self.evaluation.regression.after_sync(reports)
        except Exception as exc:  # noqa: BLE001 - the sync is done and published; say the evaluation failed
            for r in reports:
                r.errors.append({"file": None, "reason": f"pinned evaluation failed: {type(exc).__name__}: {exc}"})
            return
        for result in results:
            alerts = [a for a in self.monitor.alerts(source=ALERT_PREFIX + result["set"]) if a["check"] == ALERT_CHECK]
            source = result["trigger"].removeprefix("sync:")
            for r in reports:
                if r.source == source:
                    r.alerts.extend(alerts)

    def _check_failed_sync(self, source: str) -> None:
        """Alert on a sync that failed as a whole (a connector error, a renamed column)."""
        try:
            run_id = self.monitor.latest_run_id(source)
            if run_id is not None:
                self.monitor.after_sync(source, run_id)
        except Exception:  # noqa: BLE001 - the sync's own error is the one to report
            from bastion.events import log

            log("monitor.failed", source=source)

    def remove_source(self, name: str, *, by: str) -> dict[str, Any]:
        """Remove a source and its documents from the index and the catalog (see bastion.source_admin);
        refused while a sync runs. ``by``: who, for the alerts it resolves."""
        from bastion.source_admin import remove_source

        with self._sync_lock():
            return remove_source(self, name, by=by)

    def rebuild_index(self, progress: Progress | None = None) -> list[SyncReport]:
        """Drop the derived index and rebuild it from the sources (e.g. after changing embedder).

        The catalog forgets what it last saw of each document, so the next sync re-reads and
        re-indexes everything; vectors still in the embedding cache are reused.
        """
        import shutil

        from sqlalchemy import update

        from bastion.catalog.models import DocumentRow

        with self._sync_lock():
            with self._store_lock:
                self._store = None
            shutil.rmtree(self.data_dir / "index", ignore_errors=True)
            if self.config.store.backend == "pgvector":
                from bastion.stores.pgvector import drop_tables

                drop_tables(self.config)
            with self.catalog.session() as s:
                s.execute(update(DocumentRow).where(DocumentRow.status != "deleted")
                          .values(seen_hash=None, seen_size=None, seen_mtime=None, current_version_id=None,
                                  status="pending"))
        return self.sync(progress=progress, accept=True)  # nothing left to protect: the index was dropped

    # -- models and answers ----------------------------------------------------------------
    @cached_property
    def models(self) -> ModelRegistry:
        """The workspace's model registry (packs pulled into data/models, user files, endpoints)."""
        from bastion.generation.models import ModelRegistry

        return ModelRegistry(self.catalog, self.data_dir / "models")

    @property
    def llm(self) -> LLM:
        """The configured LLM, loaded on first use (its file's sha256 is checked before loading)."""
        return self.llm_named(self.config.llm.model)

    def llm_named(self, name: str) -> LLM:
        """A registered model by name, loaded once per workspace object (assistants may use several)."""
        if self._llm_override is not None:
            return self._llm_override
        from bastion.generation.factory import build_llm

        with self._llm_lock:
            if name not in self._llms:
                self._llms[name] = build_llm(self.models.get(name), self.config.llm)
            return self._llms[name]

    def use_llm(self, llm: LLM | None, *, adapters: dict[str, LLM] | None = None) -> None:
        """Answer with this LLM object instead of the configured ones (tests, notebooks), and with
        ``adapters[name]`` where adapter ``name`` would answer; None undoes it."""
        self._llm_override = llm
        self._adapter_overrides = dict(adapters or {})

    @cached_property
    def adapters(self) -> AdapterRegistry:
        """LoRA adapters of the workspace's models, each with its audience (bastion.tuning)."""
        from bastion.tuning.adapters import AdapterRegistry

        return AdapterRegistry(self.catalog, self.data_dir / "adapters")

    @cached_property
    def tuning(self) -> Tuning:
        """Fine-tuning: datasets with an audience, LoRA runs, closed-loop evaluation, promotion."""
        from bastion.tuning.service import Tuning

        return Tuning(self)

    def llm_for(self, principal: Principal, model: str | None = None, *, adapter: str | None = None) -> LLM:
        """The model that answers ``principal``: the active adapter of ``model`` (default
        ``llm.model``) whose audience admits them, else the base model. ``adapter``: ``"none"``
        for the base model, or an adapter's name to use it (any status) where its audience admits
        ``principal`` (evaluation of a candidate)."""
        name = model or self.config.llm.model
        if adapter == "none":
            return self.llm_named(name)
        if adapter is None:
            chosen = self.adapters.active_for(principal, name)
        else:
            named = self.adapters.get(adapter)
            chosen = named if named.admits(principal) and named.base_model == name else None
        if chosen is None:
            return self.llm_named(name)
        return self._adapted(name, chosen)

    def _adapted(self, name: str, adapter: Adapter) -> LLM:
        from bastion.tuning.adapters import AdaptedLLM

        if self._llm_override is not None:
            if adapter.name not in self._adapter_overrides:
                raise ConfigError(f"adapter {adapter.name!r} would answer, but use_llm() was given no LLM for it")
            return AdaptedLLM(self._adapter_overrides[adapter.name], adapter.name)
        from bastion.generation.factory import build_llm

        key = f"{name}+{adapter.name}@{adapter.sha256}"
        with self._llm_lock:
            if key not in self._llms:
                self._llms[key] = AdaptedLLM(build_llm(self.models.get(name), self.config.llm,
                                                       adapter=(adapter.name, Path(adapter.path), adapter.sha256)),
                                             adapter.name)
            return self._llms[key]

    def check_adapters(self) -> list[dict[str, Any]]:
        """Withdraw adapters whose training documents were deleted or restricted since training, with
        an ``adapter`` alert each (``bastion monitor run`` and every sync call this)."""
        from bastion.monitoring.checks import Finding

        withdrawn = []
        for adapter, reason in self.adapters.stale():
            self.adapters.withdraw(adapter.name, reason)
            finding = Finding(kind="adapter", severity="hard",
                              message=f"adapter {adapter.name!r} was withdrawn: {reason}. Its audience "
                                      f"({', '.join(adapter.audience)}) may no longer read what it was trained on; "
                                      f"it answers nobody until you retrain or `bastion tune accept {adapter.name}`.",
                              detail={"adapter": adapter.name, "reason": reason})
            self.monitor.book.reconcile(f"adapter:{adapter.name}", None, {"adapter.documents": finding})
            withdrawn.append({"adapter": adapter.name, "reason": reason})
        return withdrawn

    def assistants(self) -> dict[str, AssistantConfig]:
        """Assistant name -> AssistantConfig; ``bastion`` (the workspace defaults) unless redefined."""
        from bastion.core.config import AssistantConfig

        return {"bastion": AssistantConfig(description="The workspace's default model, prompt and sources.")} | dict(self.config.assistants)

    def build_answerer(self, answer_cfg: AnswerConfig, *, model: str | None = None,
                       search_mode: str | None = None, adapter: str | None = None) -> Answerer:
        """An Answerer with these answer settings, this model (default ``llm.model``) and this
        retrieval mode (default ``search.mode``); evaluation builds one per configuration.

        ``adapter``: None answers each asker as served (the active adapter their audience admits),
        ``"none"`` with the base model only, a name with that adapter for the askers its audience
        admits (the base model for the others).
        """
        from bastion.generation.answer import Answerer
        from bastion.generation.prompting import load_template
        from bastion.generation.records import AnswerRecords

        a = answer_cfg
        name = model or self.config.llm.model
        template = load_template(a.prompt, a.prompt_dir, a.few_shot_file, base=self.home)

        def search(query: str, principal: Principal, k: int | None = None, *,
                   source: str | list[str] | None = None) -> list[Hit]:
            return self.search(query, principal, k, source=source, mode=search_mode)

        return Answerer(template, a, self.config.llm, lambda: self.llm_named(name),
                        llm_for=lambda principal: self.llm_for(principal, name, adapter=adapter),
                        search=search, embedder=lambda: self.embedder,
                        records=AnswerRecords(self.catalog, embed_batch_size=self.config.embedder.batch_size),
                        warnings_for=self._source_warnings)

    def _source_warnings(self, doc_ids: list[str]) -> list[dict[str, Any]]:
        return self.monitor.warnings_for(doc_ids)

    def answerer_for(self, assistant: str) -> Assistant:
        """One assistant: its answerer (model, prompt template, mode) and its sources."""
        from bastion.generation.answer import Assistant

        known = self.assistants()
        if assistant not in known:
            raise ConfigError(f"unknown assistant {assistant!r} (known: {', '.join(sorted(known))})")
        if assistant not in self._answerers:
            spec = known[assistant]
            a = self.config.answer.model_copy(update={k: v for k, v in {"mode": spec.mode, "prompt": spec.prompt}.items() if v})
            for name in spec.sources:
                self.sources.get(name)
            self._answerers[assistant] = Assistant(
                answerer=self.build_answerer(a, model=spec.model),
                sources=list(spec.sources) or None)
        return self._answerers[assistant]

    @cached_property
    def answerer(self) -> Answerer:
        """The Answerer with the workspace defaults (CLI and Python API)."""
        return self.build_answerer(self.config.answer)

    def ask(self, question: str, principal: Principal, *, mode: str | None = None,
            history: list[ChatMessage] | None = None, source: str | list[str] | None = None,
            on_token: OnToken | None = None) -> Answer:
        """Answer ``question`` from the passages ``principal`` may read; see bastion.generation.answer."""
        return self.answerer.ask(question, principal, mode=mode, history=history, source=source, on_token=on_token)

    def lineage(self, lineage_id: str) -> dict[str, Any]:
        """One answer's lineage record (see bastion.lineage)."""
        from bastion import lineage

        return lineage.read(self.catalog, lineage_id)

    def lineage_list(self, limit: int = 20, user_id: str | None = None) -> list[dict[str, Any]]:
        """The latest answers' lineage summaries, newest first."""
        from bastion import lineage

        return lineage.recent(self.catalog, limit, user_id)

    # -- search ----------------------------------------------------------------------------
    def index_status(self, source: str | list[str] | None = None) -> IndexStatus:
        """How many documents are indexed (in ``source``), for anyone: ``.empty`` and ``.hint`` (why
        none are and how to fill the index) let an empty result say so instead of blaming the ACL."""
        from bastion.ingest.status import index_status

        names = [source] if isinstance(source, str) else source
        for name in names or []:
            self.sources.get(name)  # unknown source: a clear error
        return index_status(self.catalog, names)

    def search(self, query: str, principal: Principal, k: int | None = None, *, source: str | list[str] | None = None,
               mode: str | None = None) -> list[Hit]:
        """Hybrid search as ``principal``; only chunks whose ACL admits them are considered."""
        from bastion.retrieval.hybrid import HybridRetriever

        if not isinstance(principal, Principal):
            raise TypeError("search() needs a Principal; get one with workspace.principal(user_id)")
        s = self.config.search
        if isinstance(source, str):
            self.sources.get(source)  # unknown source: clear error instead of silently empty results
        elif source is not None:
            source = [self.sources.get(name).name for name in source]
        retriever = HybridRetriever(self.store, self.embedder.embed_query, candidates=s.candidates, rrf_k=s.rrf_k,
                                     bm25_weight=s.bm25_weight)
        return retriever.search(query, principal, k or s.k, source=source, mode=mode or s.mode)
