"""A llama.cpp runtime compiled for this machine's CPU, used instead of the prebuilt wheel when it is safe.

The ``xllamacpp`` wheel on PyPI is compiled for any x86-64 CPU with AVX2, so a server CPU's
AVX512 / VNNI / AMX kernels sit unused. ``bastion model runtime build`` compiles the same
``xllamacpp`` version from its sdist with ``-march=native`` into a cache folder named by the
version and this CPU's feature fingerprint, checks that it answers like the stock wheel
(:func:`verify_runtime`), and records the result in the folder's ``runtime.json``. The default
install never compiles anything: without a verified build for this CPU the stock wheel runs.

The native package is imported under its own name (``bastion_llm_runtime_<key>``), but a process
runs one llama.cpp copy only: both extension files define ~70 GNU-unique symbols (the logger, function
statics) that the dynamic linker binds process-wide whatever ``RTLD_LOCAL`` says, so a second copy
runs on the first one's state (it crashed in verification). :func:`select_runtime` therefore keeps
to the copy already loaded, and verification and benchmarks run each runtime in a child process.

>>> cpu_fingerprint("model name : X\\nflags : avx2 avx\\n") == cpu_fingerprint("model name : X\\nflags : avx avx2\\n")
True
>>> runtime_dir(Path("/c"), "1.0", "ab12").as_posix()
'/c/xllamacpp-1.0-ab12'
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from bastion.core.errors import ConfigError
from bastion.core.hardware import cpu_fingerprint

log = logging.getLogger("bastion.llm.runtime")

XLLAMACPP_VERSION = "2026.10.11549"  # the pinned wheel; a native build compiles this same version
MANIFEST = "runtime.json"
RuntimeMode = Literal["auto", "stock", "native"]


def runtimes_root() -> Path:
    """Where native builds are cached: ``$BASTION_LLM_RUNTIME_DIR``, else the user's cache dir.

    The user's cache (not the workspace) because a build belongs to the machine, not to the data;
    the fingerprint check still refuses a folder copied from another host.
    """
    env = os.environ.get("BASTION_LLM_RUNTIME_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "llm-runtimes"


def runtime_dir(root: Path, version: str, fingerprint: str) -> Path:
    return root / f"xllamacpp-{version}-{fingerprint}"


@dataclass
class NativeRuntime:
    """One cached build: ``site/xllamacpp/`` (the unpacked wheel) and ``runtime.json`` beside it."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def read(cls, path: Path) -> NativeRuntime | None:
        """The build in ``path``, or None where it holds no readable manifest (a half-written build)."""
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cls(path, manifest) if isinstance(manifest, dict) else None

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("cpu_fingerprint", ""))

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def verified(self) -> bool:
        return bool((self.manifest.get("verification") or {}).get("ok"))

    @property
    def kernels(self) -> list[str]:
        return list(self.manifest.get("kernels") or [])

    def save(self) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path / MANIFEST)

    def load(self) -> ModuleType:
        """Import this build's ``xllamacpp`` package under a name of its own (once per process)."""
        pkg = self.path / "site" / "xllamacpp"
        name = "bastion_llm_runtime_" + hashlib.sha256(str(pkg.resolve()).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
        if spec is None or spec.loader is None or not (pkg / "__init__.py").is_file():
            raise ConfigError(f"the native LLM runtime in {self.path} has no xllamacpp package; "
                              "rebuild it: bastion model runtime build")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


@dataclass(frozen=True)
class RuntimeChoice:
    """Which llama.cpp runs a model, and why (shown by ``bastion doctor`` and logged on load)."""

    kind: Literal["stock", "native"]
    reason: str
    runtime: NativeRuntime | None = None

    def module(self) -> ModuleType:
        if self.runtime is not None:
            return self.runtime.load()
        import importlib

        return importlib.import_module("xllamacpp")


def find_runtimes(root: Path | None = None) -> list[NativeRuntime]:
    """Every build in the cache, whatever CPU or version it was made for."""
    base = root or runtimes_root()
    if not base.is_dir():
        return []
    found = (NativeRuntime.read(p) for p in sorted(base.iterdir()) if p.is_dir() and p.name.startswith("xllamacpp-"))
    return [r for r in found if r is not None]


def usable_reason(rt: NativeRuntime, fingerprint: str, version: str) -> str | None:
    """Why ``rt`` must not run here (None: it may).

    >>> rt = NativeRuntime(Path("/x"), {"cpu_fingerprint": "a", "version": "1", "verification": {"ok": True}})
    >>> usable_reason(rt, "b", "1")
    'built for another CPU (fingerprint a, this CPU is b)'
    >>> usable_reason(rt, "a", "2")
    'built from xllamacpp 1, the installed wheel is 2'
    >>> usable_reason(rt, "a", "1")  # right CPU and version, but nothing at /x
    'its files are missing'
    """
    if rt.fingerprint != fingerprint:
        return f"built for another CPU (fingerprint {rt.fingerprint or 'none'}, this CPU is {fingerprint})"
    if rt.version != version:
        return f"built from xllamacpp {rt.version or 'unknown'}, the installed wheel is {version}"
    if not (rt.path / "site" / "xllamacpp" / "__init__.py").is_file():
        return "its files are missing"
    if not rt.verified:
        why = (rt.manifest.get("verification") or {}).get("problem")
        return "not verified" + (f": {why}" if why else " (bastion model runtime build verifies it)")
    return None


def loaded_copy() -> str | None:
    """Which llama.cpp this process has loaded: "stock", a native build's folder, or None."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("bastion_llm_runtime_") and "." not in name:
            return str(Path(getattr(mod, "__file__", "") or "").parent.parent.parent)
    return "stock" if "xllamacpp.xllamacpp" in sys.modules else None


def select_runtime(mode: str = "auto", *, root: Path | None = None, fingerprint: str | None = None,
                   version: str = XLLAMACPP_VERSION, in_process: bool = True) -> RuntimeChoice:
    """The runtime for ``[llm] runtime = mode``: a verified native build for this CPU, or the stock wheel.

    ``auto`` falls back to the stock wheel (logging why each cached build was passed over);
    ``native`` raises instead, so a deployment that counts on the speed notices. ``in_process``:
    keep to the llama.cpp copy this process already loaded (False: what a fresh process would run).
    """
    if mode not in ("auto", "stock", "native"):
        raise ConfigError(f"llm.runtime = {mode!r} is not one of 'auto', 'stock', 'native'")
    loaded = loaded_copy() if in_process else None
    if mode == "stock":
        if loaded not in (None, "stock"):
            raise ConfigError(f"llm.runtime = 'stock' but this process already runs the native build {loaded}; "
                              "a process runs one llama.cpp copy")
        return RuntimeChoice("stock", "llm.runtime = 'stock'")
    if loaded == "stock":
        if mode == "native":
            raise ConfigError("llm.runtime = 'native' but this process already loaded the stock xllamacpp wheel; "
                              "a process runs one llama.cpp copy")
        return RuntimeChoice("stock", "the stock wheel is already loaded in this process (one llama.cpp copy each)")
    fp = fingerprint or cpu_fingerprint()
    reasons = []
    for rt in find_runtimes(root):
        why = usable_reason(rt, fp, version)
        if why is None and loaded not in (None, str(rt.path)):
            why = f"this process already runs another native build ({loaded})"
        if why is None:
            return RuntimeChoice("native", f"verified native build for this CPU ({rt.path})", rt)
        reasons.append(f"{rt.path.name}: {why}")
        log.info("llm_runtime_skipped path=%s reason=%s", rt.path, why)
    reason = ("no usable native build: " + "; ".join(reasons)) if reasons else "no native build for this CPU yet"
    if mode == "native":
        raise ConfigError(f"llm.runtime = 'native' but there is {reason}; build one with `bastion model runtime build` "
                          "or set llm.runtime = 'auto'")
    return RuntimeChoice("stock", reason)


__all__ = ["MANIFEST", "XLLAMACPP_VERSION", "NativeRuntime", "RuntimeChoice", "cpu_fingerprint", "find_runtimes",
           "loaded_copy", "runtime_dir", "runtimes_root", "select_runtime", "usable_reason"]
