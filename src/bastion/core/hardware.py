"""What this machine is, for ``bastion doctor``: CPU, memory, GPU, the llama.cpp kernels the
installed ``xllamacpp`` wheel was compiled with against those the CPU could run, and which build runs.

Pure functions over text (``/proc/cpuinfo``, ``/proc/meminfo``, ``get_system_info()``) plus thin
readers that never raise: where a file cannot be read (not Linux, a sandbox) the value is
``None``, shown as "unknown".

>>> sorted(cpu_flags("flags\\t\\t: fpu sse4_2 avx avx2 fma\\n") & set(INFERENCE_FLAGS))
['avx', 'avx2', 'fma', 'sse4_2']
>>> sorted(missing_kernels({"avx2", "avx512f", "amx_tile", "amx_int8"}, {"AVX2"}))
['AMX_INT8', 'AVX512']
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

# the /proc/cpuinfo flags that decide which inference kernels a CPU can run
INFERENCE_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
                   "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")

# llama.cpp's CPU kernel (as ``get_system_info()`` names it) <- the CPU flags it needs
KERNEL_FLAGS: dict[str, tuple[str, ...]] = {
    "AVX": ("avx",),
    "AVX2": ("avx2",),
    "FMA": ("fma",),
    "F16C": ("f16c",),
    "AVX_VNNI": ("avx_vnni",),
    "AVX512": ("avx512f",),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX_INT8": ("amx_tile", "amx_int8"),
}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a ``/proc/cpuinfo`` text.

    >>> sorted(cpu_flags("processor : 0\\nflags : fpu avx\\n\\nprocessor : 1\\nflags : fpu avx\\n"))
    ['avx', 'fpu']
    >>> cpu_flags("")
    set()
    """
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_fingerprint(cpuinfo: str | None = None) -> str:
    """16 hex digits naming what ``-march=native`` depends on: the CPU model and its feature flags."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    key = f"{cpu_model(text) or ''}\n{' '.join(sorted(cpu_flags(text)))}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cpu_model(cpuinfo: str) -> str | None:
    """``model name`` of the first processor.

    >>> cpu_model("model name\\t: Intel(R) Xeon(R) Platinum 8480+\\n")
    'Intel(R) Xeon(R) Platinum 8480+'
    """
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return None


def meminfo_bytes(meminfo: str) -> dict[str, int]:
    """``MemTotal`` and ``MemAvailable`` of a ``/proc/meminfo`` text, in bytes (keys present only when found).

    >>> meminfo_bytes("MemTotal:  2048 kB\\nMemFree: 1 kB\\nMemAvailable: 1024 kB\\n")
    {'total': 2097152, 'available': 1048576}
    """
    out: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, sep, value = line.partition(":")
        name = {"MemTotal": "total", "MemAvailable": "available"}.get(key.strip())
        parts = value.split()
        if sep and name and parts and parts[0].isdigit():
            out[name] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def system_info_kernels(info: str) -> set[str]:
    """The kernels a llama.cpp build reports as compiled in (``NAME = 1``) by ``get_system_info()``.

    >>> sorted(system_info_kernels("CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | OPENMP = 1 | "))
    ['AVX', 'OPENMP', 'SSE3']
    """
    kernels: set[str] = set()
    for part in info.replace("\n", "|").split("|"):
        if ":" in part:  # "CPU : SSE3 = 1": the backend's name comes first
            part = part.split(":", 1)[1]
        name, sep, value = part.partition("=")
        if sep and value.strip() == "1" and name.strip():
            kernels.add(name.strip())
    return kernels


def missing_kernels(flags: set[str], compiled: set[str]) -> set[str]:
    """Kernels this CPU can run (by its ``flags``) that a build with ``compiled`` kernels lacks.

    >>> missing_kernels({"avx", "avx2"}, {"AVX", "AVX2"})
    set()
    """
    return {k for k, need in KERNEL_FLAGS.items() if all(f in flags for f in need) and k not in compiled}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_report() -> dict[str, Any]:
    """CPU model, cores, memory and inference flags of this machine (None where unknown)."""
    cpuinfo, meminfo = _read("/proc/cpuinfo"), _read("/proc/meminfo")
    flags = cpu_flags(cpuinfo) if cpuinfo else set()
    try:
        available: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        available = None
    mem = meminfo_bytes(meminfo) if meminfo else {}
    return {
        "model": cpu_model(cpuinfo) if cpuinfo else None,
        "logical_cores": os.cpu_count(),
        "available_cores": available,
        "memory_total": mem.get("total"),
        "memory_available": mem.get("available"),
        "features": {f: f in flags for f in INFERENCE_FLAGS} if flags else None,
    }


def gpu_report(timeout_s: float = 5.0) -> dict[str, Any]:
    """What ``nvidia-smi`` lists (name, memory in MiB); ``available`` False without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"available": False, "gpus": [], "error": None}
    try:
        proc = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=timeout_s)
    except (subprocess.SubprocessError, OSError) as exc:
        return {"available": False, "gpus": [], "error": f"nvidia-smi failed: {exc}"}
    if proc.returncode != 0:
        return {"available": False, "gpus": [], "error": (proc.stderr or proc.stdout).strip()[:300] or "nvidia-smi failed"}
    return {"available": True, "gpus": parse_nvidia_smi(proc.stdout), "error": None}


def parse_nvidia_smi(csv_text: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``.

    >>> parse_nvidia_smi("NVIDIA H200, 143771\\n")
    [{'name': 'NVIDIA H200', 'memory_mib': 143771}]
    """
    gpus = []
    for line in csv_text.splitlines():
        name, _, memory = line.rpartition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "memory_mib": int(memory) if memory.strip().isdigit() else None})
    return gpus


def llm_runtime_report(flags: set[str] | None) -> dict[str, Any]:
    """The installed ``xllamacpp``: version, compiled kernels, and those a native build would add."""
    from importlib import metadata

    try:
        version = metadata.version("xllamacpp")
    except metadata.PackageNotFoundError:
        return {"installed": False, "version": None, "kernels": None, "native_build_would_add": None, "error": None}
    try:
        import xllamacpp

        info = str(xllamacpp.get_system_info())
    except (ImportError, OSError, AttributeError, RuntimeError) as exc:  # a broken or mismatched wheel: report it, the rest of the report goes on
        return {"installed": True, "version": version, "kernels": None, "native_build_would_add": None,
                "error": f"cannot load xllamacpp: {exc}"}
    kernels = system_info_kernels(info)
    missing = sorted(missing_kernels(flags, kernels)) if flags is not None else None
    return {"installed": True, "version": version, "kernels": sorted(kernels), "native_build_would_add": missing,
            "error": None, **native_runtime_report()}


def native_runtime_report() -> dict[str, Any]:
    """Which llama.cpp build ``llm.runtime = "auto"`` runs here, and the cached native build for this CPU.

    Read from the build's manifest (kernels, verification, measured speedup): nothing is loaded.
    """
    from bastion.generation.native_runtime import (
        XLLAMACPP_VERSION,
        cpu_fingerprint,
        find_runtimes,
        select_runtime,
        usable_reason,
    )

    fp = cpu_fingerprint()
    choice = select_runtime("auto", fingerprint=fp, in_process=False)  # doctor itself loaded the stock wheel
    mine = [rt for rt in find_runtimes() if rt.fingerprint == fp] or find_runtimes()
    native = None
    if mine:
        rt = choice.runtime or mine[0]
        measured = rt.manifest.get("measured") or {}
        native = {"path": str(rt.path), "kernels": rt.kernels, "verified": rt.verified,
                  "usable": usable_reason(rt, fp, XLLAMACPP_VERSION) is None,
                  "reason": usable_reason(rt, fp, XLLAMACPP_VERSION), "speedup": measured.get("speedup"),
                  "measured": measured or None}
    return {"in_use": choice.kind, "in_use_reason": choice.reason, "native": native}


__all__ = ["INFERENCE_FLAGS", "KERNEL_FLAGS", "cpu_flags", "cpu_model", "cpu_report", "gpu_report",
           "llm_runtime_report", "meminfo_bytes", "missing_kernels", "native_runtime_report", "parse_nvidia_smi", "system_info_kernels"]
