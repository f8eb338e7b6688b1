"""In-process llama.cpp on a GGUF file, through the prebuilt ``xllamacpp`` wheel.

``xllamacpp`` ships llama.cpp's own server engine as an abi3 wheel (CPU build on PyPI), so a
fresh machine installs it in seconds instead of compiling ``llama-cpp-python`` for minutes.
The engine also listens on a loopback port; Bastion protects it with a random API key that
never leaves the process, and calls it through Python for generation. The port is only used
for tokenising (the engine exposes no Python call for it).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bastion.core.errors import GenerationError, MissingExtraError, ModelError
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
                 lora: Sequence[tuple[str | Path, float, str | None]] = ()):
        """``lora``: LoRA adapter GGUFs applied over the model, each (path, scale, pinned sha256 or None)."""
        try:
            import xllamacpp as xlc
        except ImportError as exc:  # pragma: no cover - base dependency
            raise MissingExtraError("the in-process LLM needs 'xllamacpp': pip install xllamacpp") from exc
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
            "cache_prompt": False,  # the same prompt gives the same tokens whatever came before
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
