"""Compile, verify and measure a native llama.cpp runtime (``bastion model runtime build``).

The build is ``pip wheel xllamacpp==<pinned> --no-binary xllamacpp`` with ``GGML_NATIVE=ON``: pip
fetches the sdist and its build tools (Cython, setuptools) as it would for any install, CMake
compiles llama.cpp for this CPU, and the wheel is unpacked into the runtime's cache folder. The
vendored llguidance (needs Rust and crates from the network) and BoringSSL (fetched by git) are
switched off: Bastion uses neither (GBNF grammars are llama.cpp's own; the engine listens on loopback).

A build is used only after :func:`verify_runtime` ran the model through both runtimes with greedy
decoding on fixed prompts: every answer must agree for its first :data:`VERIFY_MATCH_TOKENS` tokens
and at least one must be identical throughout. AVX512 kernels round differently from the wheel's
AVX2 ones, so a tiny model's greedy text forks at near-ties (measured on SmolLM2-135M: after 11 and
41 of 48 tokens, one answer identical); a build that computes something else forks at once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bastion.core.errors import GenerationError
from bastion.core.hardware import _cpuinfo, cpu_fingerprint, cpu_model
from bastion.generation.native_runtime import (
    XLLAMACPP_VERSION,
    NativeRuntime,
    runtime_dir,
    runtimes_root,
)
from bastion.generation.protocol import ChatMessage, DecodingParams

CMAKE_ARGS = ("-DGGML_NATIVE=ON", "-DLLAMA_LLGUIDANCE=OFF", "-DLLAMA_BUILD_BORINGSSL=OFF")
VERIFY_MAX_TOKENS = 48
VERIFY_MATCH_TOKENS = 8
VERIFY_PROMPTS = (
    ("Answer in one sentence.", "Why is the sky blue?"),
    ("Answer only from the sources. End each sentence with [n].",
     "Sources:\n[1] The invoice approval limit for team leads is 5,000 euros; above it the finance director "
     "signs.\n[2] Travel expenses are refunded within 30 days of the claim.\n\nQuestion: Who signs an invoice "
     "of 7,000 euros?"),
    ("You are a helpful assistant.", "List three uses of a paperclip."),
)
Progress = Callable[[str], None]
_PERCENT = re.compile(r"\[\s*(\d+)%\]")


def build_runtime(*, root: Path | None = None, sdist: Path | None = None, wheel: Path | None = None,
                  jobs: int | None = None, progress: Progress | None = None) -> NativeRuntime:
    """Compile xllamacpp for this CPU into the cache; returns the (not yet verified) runtime.

    ``wheel``: install a wheel an earlier build compiled on this machine instead of compiling again.
    """
    say = progress or (lambda _m: None)
    fp = cpu_fingerprint()
    target = runtime_dir(root or runtimes_root(), XLLAMACPP_VERSION, fp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        say(f"installing {wheel} into {target}")
        install_wheel(wheel, target, fingerprint=fp, cmake_args=list(CMAKE_ARGS))
    else:
        _compile(target, fp, sdist=sdist, jobs=jobs, say=say)
    rt = NativeRuntime.read(target)
    assert rt is not None
    rt.manifest["kernels"] = kernels_of(rt)
    rt.save()
    return rt


def _compile(target: Path, fp: str, *, sdist: Path | None, jobs: int | None, say: Progress) -> None:
    with tempfile.TemporaryDirectory(prefix="bastion-llm-build-") as tmp:
        wheels = Path(tmp) / "wheel"
        source = str(sdist) if sdist else f"xllamacpp=={XLLAMACPP_VERSION}"
        cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-binary", "xllamacpp",
               "--disable-pip-version-check", "-w", str(wheels), source]
        env = {**os.environ, "CMAKE_ARGS": " ".join(CMAKE_ARGS), "NPROC": str(jobs or os.cpu_count() or 2)}
        say(f"compiling xllamacpp {XLLAMACPP_VERSION} for this CPU ({cpu_model(_cpuinfo()) or 'unknown'}); "
            "this takes minutes")
        tail: deque[str] = deque(maxlen=30)
        last = -1
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                m = _PERCENT.search(line)
                if m and int(m.group(1)) != last:
                    last = int(m.group(1))
                    say(f"llama.cpp {last}%")
        if proc.returncode != 0:
            raise GenerationError(f"the native llama.cpp build failed (pip exit {proc.returncode}); its last lines:\n"
                                  + "\n".join(tail))
        built = sorted(wheels.glob("xllamacpp-*.whl"))
        if not built:
            raise GenerationError(f"the native llama.cpp build produced no wheel in {wheels}")
        say("installing the build into " + str(target))
        install_wheel(built[0], target, fingerprint=fp, cmake_args=list(CMAKE_ARGS))


def install_wheel(wheel: Path, target: Path, *, fingerprint: str, cmake_args: list[str]) -> None:
    """Unpack an xllamacpp wheel as a runtime folder (all at once: a half-copied build is never seen)."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "site").mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(staging / "site")
    NativeRuntime(staging, {"version": XLLAMACPP_VERSION, "cpu_fingerprint": fingerprint,
                            "cpu_model": cpu_model(_cpuinfo()), "cmake_args": cmake_args, "wheel": wheel.name,
                            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kernels": [],
                            "verification": None, "measured": None}).save()
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)


def kernels_of(rt: NativeRuntime) -> list[str]:
    """The kernels the build reports, read in a child process (one llama.cpp copy per process)."""
    from bastion.core.hardware import system_info_kernels

    code = ("import sys; from pathlib import Path; from bastion.generation.native_runtime import NativeRuntime; "
            "print(NativeRuntime.read(Path(sys.argv[1])).load().get_system_info())")
    proc = subprocess.run([sys.executable, "-c", code, str(rt.path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise GenerationError(f"the native build in {rt.path} does not load (exit {proc.returncode}): "
                              f"{proc.stderr.strip()[-400:]}")
    return sorted(system_info_kernels(proc.stdout))


class RuntimeWorker:
    """One runtime ("stock" or a build's folder) on one model, in a child process of its own.

    Two llama.cpp copies cannot share a process (see :mod:`bastion.generation.native_runtime`), so
    comparing or timing them runs each here; requests and answers are JSON lines.
    """

    def __init__(self, runtime: str, model_path: Path, *, threads: int | None = None, context_window: int = 2048,
                 prompt_cache: bool = False):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.generation.native_build", runtime, str(model_path), str(threads or 0),
             str(context_window), "1" if prompt_cache else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise GenerationError(f"the LLM runtime worker exited (code {self.proc.wait()})")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise GenerationError(out["error"])
        return out

    def call(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def ask(self, messages: list[ChatMessage], max_tokens: int) -> dict[str, Any]:
        """{text, prompt_tokens, ttft_s, timings} of one greedy answer."""
        return self.call(messages=[m.to_dict() for m in messages], max_tokens=max_tokens)

    def count_tokens(self, text: str) -> int:
        return int(self.call(count=text)["tokens"])

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.call(tokenize=text)["tokens"]]

    def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        """The tokens the engine evaluates for a chat request of ``messages``."""
        return [int(t) for t in self.call(messages=[m.to_dict() for m in messages], prompt_tokens=True)["tokens"]]

    def next_token_logprobs(self, tokens: list[int], k: int, *, reuse: bool) -> dict[int, float]:
        """See :meth:`bastion.generation.llamacpp.LlamaCppLLM.next_token_logprobs`."""
        return {int(t): float(lp) for t, lp in self.call(logprobs=tokens, k=k, reuse=reuse)["top"]}

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _serve(argv: list[str]) -> None:
    """The worker's side: load the runtime named in argv, answer JSON-line requests until stdin closes."""
    from bastion.generation.llamacpp import LlamaCppLLM

    runtime, model, threads, window, cache = argv
    try:
        rt: str | NativeRuntime = "stock"
        if runtime != "stock":
            found = NativeRuntime.read(Path(runtime))
            if found is None:
                raise GenerationError(f"no native runtime in {runtime}")
            rt = found
        llm = LlamaCppLLM(Path(model), runtime=rt, threads=int(threads) or None, context_window=int(window),
                          prompt_cache=cache == "1")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print(json.dumps({"runtime": llm.runtime.kind, "sha256": llm.sha256}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if "count" in req:
            print(json.dumps({"tokens": llm.count_tokens(req["count"])}), flush=True)
            continue
        if "tokenize" in req:
            print(json.dumps({"tokens": llm.tokenize(req["tokenize"])}), flush=True)
            continue
        if "logprobs" in req:
            top = llm.next_token_logprobs(req["logprobs"], int(req["k"]), reuse=bool(req["reuse"]))
            print(json.dumps({"top": [[t, lp] for t, lp in top.items()]}), flush=True)
            continue
        msgs = [ChatMessage(m["role"], m["content"]) for m in req["messages"]]
        if req.get("prompt_tokens"):
            print(json.dumps({"tokens": llm.prompt_tokens(msgs)}), flush=True)
            continue
        t0 = time.perf_counter()
        g = llm.generate(msgs, DecodingParams(max_tokens=req["max_tokens"], temperature=0.0, repeat_penalty=1.0))
        print(json.dumps({"text": g.text, "prompt_tokens": g.prompt_tokens, "ttft_s": time.perf_counter() - t0,
                          "timings": llm.last_timings}), flush=True)
    llm.close()


def _native_worker(rt: NativeRuntime, model_path: Path, threads: int | None, say: Progress) -> RuntimeWorker:
    """A worker on ``rt``; where its extra buffer kernels (AMX tiles, repacked weights) crash (a VM
    whose CPU lists AMX but whose hypervisor faults on tile instructions: SIGILL in ``tilezero``),
    they are switched off in the manifest and the build is tried again without them."""
    try:
        return RuntimeWorker(str(rt.path), model_path, threads=threads, context_window=1024)
    except GenerationError as e:
        # SIGILL, or SIGSEGV where the illegal instruction hits an OpenMP worker thread
        if not any(f"code {c})" in str(e) for c in (-4, -11)) or rt.manifest.get("extra_bufts") is False:
            raise
        exc = e
    say(f"the build crashed on loading the model ({exc}); retrying without its AMX / repacked-weight kernels")
    rt.manifest["extra_bufts"] = False
    rt.manifest["extra_bufts_problem"] = f"AMX / repacked-weight kernels crashed here: {exc}"
    rt.save()
    return RuntimeWorker(str(rt.path), model_path, threads=threads, context_window=1024)


def compare_greedy(reference: RuntimeWorker, candidate: RuntimeWorker, names: tuple[str, str],
                   reference_says: str) -> dict[str, Any]:
    """The verdict on the greedy answers of both workers on :data:`VERIFY_PROMPTS`: ``ok`` when each
    answer agrees for :data:`VERIFY_MATCH_TOKENS` tokens and at least one is identical; ``problem``
    names the first answer that breaks it, as differing from ``reference_says``."""
    cases = []
    for system, user in VERIFY_PROMPTS:
        msgs = [ChatMessage("system", system), ChatMessage("user", user)]
        a, b = (str(w.ask(msgs, VERIFY_MAX_TOKENS)["text"]) for w in (reference, candidate))
        same = os.path.commonprefix([a, b])
        matching = reference.count_tokens(a) if a == b else max(0, reference.count_tokens(same) - 1)
        case: dict[str, Any] = {"question": user[:60], "identical": a == b, "matching_tokens": matching}
        if a != b:
            i = len(same)
            case[f"{names[0]}_from_difference"], case[f"{names[1]}_from_difference"] = a[i:i + 60], b[i:i + 60]
        cases.append(case)
    bad = [c for c in cases if not c["identical"] and c["matching_tokens"] < VERIFY_MATCH_TOKENS]
    if not bad and not any(c["identical"] for c in cases):
        bad = sorted(cases, key=lambda c: c["matching_tokens"])[:1]
    return {"ok": not bad, "rule": f"greedy texts agree for the first {VERIFY_MATCH_TOKENS} tokens of each answer, "
            f"and one answer of {VERIFY_MAX_TOKENS} tokens is identical", "cases": cases,
            "problem": None if not bad else f"its greedy answer to {bad[0]['question']!r} differs from "
            f"{reference_says} after {bad[0]['matching_tokens']} tokens",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def verify_runtime(rt: NativeRuntime, model_path: Path, *, threads: int | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Greedy answers of the stock wheel and of ``rt`` on :data:`VERIFY_PROMPTS`; records and returns the verdict."""
    say = progress or (lambda _m: None)
    say(f"verifying: greedy answers of the stock wheel and the native build on {len(VERIFY_PROMPTS)} prompts")
    stock = RuntimeWorker("stock", model_path, threads=threads, context_window=1024)
    native = _native_worker(rt, model_path, threads, say)
    try:
        verdict = compare_greedy(stock, native, ("stock", "native"), "the stock wheel's")
    finally:
        stock.close()
        native.close()
    verdict["model_sha256"] = stock.info["sha256"]
    rt.manifest["verification"] = verdict
    rt.save()
    return verdict


def prompt_speed(llm: RuntimeWorker, messages: list[ChatMessage]) -> dict[str, float]:
    """One answer of 1 token: the engine's prompt tokens/s, and the time to first token."""
    r = llm.ask(messages, 1)
    t = r["timings"]
    return {"prompt_tokens": float(t.get("prompt_n", 0)), "cached_tokens": float(t.get("cache_n", 0)),
            "prompt_tps": float(t.get("prompt_per_second", 0.0)), "ttft_s": float(r["ttft_s"])}


def filler_prompt(llm: RuntimeWorker, tokens: int) -> list[ChatMessage]:
    """A system + user prompt of about ``tokens`` of the model's tokens (numbered policy sentences)."""
    lines: list[str] = []
    n = 0
    while True:
        n += 1
        lines.append(f"[{n}] Policy {n}: requests above {n * 250} euros need the approval of manager {n % 7}.")
        if n % 10 == 0 and llm.count_tokens("\n".join(lines)) >= tokens - 30:
            break
    return [ChatMessage("system", "Answer only from the sources."),
            ChatMessage("user", "Sources:\n" + "\n".join(lines) + "\n\nQuestion: who approves 900 euros?")]


def measure_speedup(rt: NativeRuntime, model_path: Path, *, tokens: int = 1000, runs: int = 2,
                    threads: int | None = None) -> dict[str, Any]:
    """Prompt tokens/s of both runtimes on one ~``tokens`` prompt, alternating; recorded in the manifest."""
    stock = RuntimeWorker("stock", model_path, context_window=max(2048, tokens + 256), threads=threads)
    native = RuntimeWorker(str(rt.path), model_path, context_window=max(2048, tokens + 256), threads=threads)
    try:
        messages = filler_prompt(stock, tokens)
        rows: dict[str, list[dict[str, float]]] = {"stock": [], "native": []}
        for _ in range(runs):
            rows["stock"].append(prompt_speed(stock, messages))
            rows["native"].append(prompt_speed(native, messages))
    finally:
        stock.close()
        native.close()
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("prompt_tokens", "prompt_tps", "ttft_s")}
           for k, v in rows.items()}
    out = {"prompt_tokens": int(med["stock"]["prompt_tokens"]), "stock": med["stock"], "native": med["native"],
           "speedup": round(med["native"]["prompt_tps"] / med["stock"]["prompt_tps"], 2)
           if med["stock"]["prompt_tps"] else None,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rt.manifest["measured"] = out
    rt.save()
    return out


__all__ = ["CMAKE_ARGS", "RuntimeWorker", "compare_greedy", "VERIFY_MATCH_TOKENS", "VERIFY_MAX_TOKENS", "VERIFY_PROMPTS", "build_runtime",
           "filler_prompt", "install_wheel", "kernels_of", "measure_speedup", "prompt_speed", "verify_runtime"]


if __name__ == "__main__":
    _serve(sys.argv[1:])
