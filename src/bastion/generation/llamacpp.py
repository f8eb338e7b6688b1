"""In-process llama.cpp on a GGUF file, through the prebuilt ``xllamacpp`` wheel.

``xllamacpp`` ships llama.cpp's own server engine as an abi3 wheel (CPU build on PyPI), so a
fresh machine installs it in seconds instead of compiling ``llama-cpp-python`` for minutes.
The engine also listens on a loopback port; Bastion protects it with a random API key that
never leaves the process, and calls it through Python for generation. The port is only used
for tokenising (the engine exposes no Python call for it).

``runtime`` picks the llama.cpp build (:mod:`bastion.generation.native_runtime`): a verified build
compiled for this CPU when one is cached (``auto``), else the stock wheel. ``prompt_cache`` lets the
engine keep the previous prompt's KV cache and process only what differs (the system prompt and
few-shot examples are shared by every question).
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bastion.core.errors import GenerationError, MissingExtraError, ModelError
from bastion.generation.native_runtime import NativeRuntime, RuntimeChoice, loaded_copy, select_runtime
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation, OnToken, estimate_tokens


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_model_file(path: Path, expected_sha256: str | None) -> str:
    """Hash the file and compare with its pinned digest; returns the digest."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pull or add the model again")
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise ModelError(
            f"model file {path} has sha256 {digest}, expected {expected_sha256}: the file was changed or "
            "corrupted; refusing to load it (pull the model again, or re-add it if you replaced it on purpose)"
        )
    return digest


class LlamaCppLLM:
    """A GGUF model run in this process."""

    def __init__(self, path: str | Path, *, name: str | None = None, sha256: str | None = None,
                 context_window: int = 4096, threads: int | None = None,
                 lora: Sequence[tuple[str | Path, float, str | None]] = (),
                 runtime: str | NativeRuntime = "auto", prompt_cache: bool = False):
        """``lora``: LoRA adapter GGUFs applied over the model, each (path, scale, pinned sha256 or None).

        ``runtime``: "auto" | "stock" | "native", or a given build (verification runs an unverified one).
        """
        if isinstance(runtime, NativeRuntime):
            if loaded_copy() not in (None, str(runtime.path)):
                raise GenerationError(f"cannot run the native build {runtime.path}: this process already runs "
                                      f"llama.cpp ({loaded_copy()}); a process runs one copy")
            self.runtime = RuntimeChoice("native", f"given build {runtime.path}", runtime)
        else:
            self.runtime = select_runtime(runtime)
        try:
            xlc = self.runtime.module()
        except ImportError as exc:  # pragma: no cover - base dependency
            raise MissingExtraError("the in-process LLM needs 'xllamacpp': pip install xllamacpp") from exc
        logging.getLogger("bastion.llm.runtime").info("llm_runtime kind=%s reason=%s", self.runtime.kind,
                                                      self.runtime.reason)
        self.prompt_cache = bool(prompt_cache)
        self.last_timings: dict[str, Any] = {}  # the engine's timings of the last answer (prompt_n, cache_n, ...)
        self.path = Path(path)
        self.sha256 = verify_model_file(self.path, sha256)
        self.name = name or self.path.stem
        self.id = f"gguf:{self.name}@{self.sha256[:16]}"
        adapters = [(Path(p), float(scale), verify_model_file(Path(p), digest)) for p, scale, digest in lora]
        self.id += "".join(f"+lora:{d[:16]}*{scale:g}" for _p, scale, d in adapters)  # answers differ per adapter
        self.context_window = int(context_window)
        params = xlc.CommonParams()
        params.model.path = str(self.path)
        params.lora_adapters = [xlc.CommonAdapterLoraInfo(str(p), scale) for p, scale, _d in adapters]
        params.n_ctx = self.context_window
        params.n_parallel = 1
        params.verbosity = -1
        params.warmup = False
        if self.runtime.runtime is not None and self.runtime.runtime.manifest.get("extra_bufts") is False:
            # the build's AMX / repacked-weight kernels died on this machine (verification probed it)
            params.no_extra_bufts = True
        n = threads or max(1, os.cpu_count() or 1)
        params.cpuparams.n_threads = n
        params.cpuparams_batch.n_threads = n
        self._key = secrets.token_hex(24)
        params.api_keys = [self._key]
        try:
            self._server = xlc.Server(params)
        except Exception as exc:  # the engine reports a bad file as a generic failure
            raise ModelError(f"llama.cpp could not load {self.path}: {exc}") from exc
        self._http = httpx.Client(base_url=self._server.listening_address, timeout=30.0,
                                  headers={"Authorization": f"Bearer {self._key}"})
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        try:
            r = self._http.post("/tokenize", json={"content": text, "add_special": False})
            r.raise_for_status()
            return len(r.json()["tokens"])
        except (httpx.HTTPError, KeyError, ValueError):
            return estimate_tokens(text)

    def generate(self, messages: list[ChatMessage], params: DecodingParams,
                 on_token: OnToken | None = None) -> Generation:
        req: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            # off: the same prompt gives the same tokens whatever came before; on: a shared prefix
            # (system prompt, few-shot) is taken from the previous request's KV cache
            "cache_prompt": self.prompt_cache,
        }
        if params.temperature == 0:
            req["top_k"] = 1
        if params.repeat_penalty != 1.0:
            req["repeat_penalty"] = params.repeat_penalty
        if params.grammar:
            req["grammar"] = params.grammar
        if params.stop:
            req["stop"] = list(params.stop)
        t0 = time.perf_counter()
        with self._lock:
            if on_token is None:
                out = self._server.handle_chat_completions(req)
                self._raise_if_error(out)
                self.last_timings = dict(out.get("timings") or {})
                choice = out["choices"][0]
                usage = out.get("usage") or {}
                total = time.perf_counter() - t0
                return Generation(text=choice["message"].get("content") or "", model_id=self.id,
                                  prompt_tokens=usage.get("prompt_tokens"),
                                  completion_tokens=usage.get("completion_tokens"),
                                  finish_reason=choice.get("finish_reason"), total_s=total)
            parts: list[str] = []
            state: dict[str, Any] = {"first": None, "usage": {}, "finish": None, "error": None}

            def callback(chunk: dict[str, Any]) -> None:
                if "error" in chunk:
                    state["error"] = chunk
                    return
                if chunk.get("usage"):
                    state["usage"] = chunk["usage"]
                if chunk.get("timings"):
                    self.last_timings = dict(chunk["timings"])
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        if state["first"] is None:
                            state["first"] = time.perf_counter() - t0
                        parts.append(delta)
                        on_token(delta)
                    if choice.get("finish_reason"):
                        state["finish"] = choice["finish_reason"]

            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
            out = self._server.handle_chat_completions(req, callback)
            if state["error"]:
                self._raise_if_error(state["error"])
            if isinstance(out, dict):
                self._raise_if_error(out)
        usage = state["usage"]
        return Generation(text="".join(parts), model_id=self.id, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), finish_reason=state["finish"],
                          first_token_s=state["first"], total_s=time.perf_counter() - t0)

    @staticmethod
    def _raise_if_error(out: dict[str, Any]) -> None:
        if isinstance(out, dict) and "error" in out:
            err = out["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise GenerationError(f"llama.cpp refused the request: {msg}")

    def close(self) -> None:
        self._http.close()
        server = self.__dict__.pop("_server", None)
        del server
