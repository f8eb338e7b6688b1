"""In-process llama.cpp on a GGUF file, through the prebuilt ``xllamacpp`` wheel.

``xllamacpp`` ships llama.cpp's own server engine as an abi3 wheel (CPU build on PyPI), so a
fresh machine installs it in seconds instead of compiling ``llama-cpp-python`` for minutes.
The engine also listens on a loopback port; Bastion protects it with a random API key that
never leaves the process, and calls it through Python for generation. The port is only used
for tokenising and applying the chat template (the engine exposes no Python call for them).

``runtime`` picks the llama.cpp build (:mod:`bastion.generation.native_runtime`): a verified build
compiled for this CPU when one is cached (``auto``), else the stock wheel. Every prompt is evaluated
in fixed steps (:mod:`bastion.generation.prompt_prefix`): its fixed part (system prompt, few-shot
examples) apart from the rest, so that ``prompt_cache`` can keep that part between answers without
changing any answer.
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
from bastion.generation.prompt_prefix import fixed_length, merge_timings
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation, OnToken, estimate_tokens

log = logging.getLogger("bastion.llm")


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
        ``prompt_cache``: keep the fixed part of the prompt between answers (the answers stay the same).
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
        self._held: tuple[int, ...] | None = None  # the fixed part whose steps 1-2 the engine's cache holds
        self._split = True  # False once the engine could not cut its cache back at a fixed part
        self._probe: tuple[tuple[tuple[str, str], ...], list[int]] | None = None  # last probe's tokens
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
        # no host-memory prompt cache: it could swap another prompt's state into the slot, and the fixed
        # part is only ever reused through the steps of bastion.generation.prompt_prefix
        params.cache_ram_mib = 0
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
        self._plain_token: int | None = None

    def count_tokens(self, text: str) -> int:
        try:
            return len(self.tokenize(text))
        except (GenerationError, KeyError):
            return estimate_tokens(text)

    def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        """The tokens a chat request of ``messages`` is evaluated as (chat template, then tokenizer)."""
        return self._prompt_tokens([m.to_dict() for m in messages])

    def tokenize(self, text: str) -> list[int]:
        """``text``'s tokens, without special tokens."""
        return list(self._post("/tokenize", {"content": text, "add_special": False})["tokens"])

    def next_token_logprobs(self, tokens: list[int], k: int, *, reuse: bool) -> dict[int, float]:
        """The ``k`` most likely tokens after ``tokens`` with their log-probabilities (softmax over the
        whole vocabulary). ``reuse``: evaluate only what the engine's cache lacks (one token per call
        on a growing sequence, as in generation); otherwise the whole sequence in one batch (as a prompt)."""
        if self._plain_token is None:
            self._plain_token = self.tokenize("x")[0]
        with self._lock:
            self._held = None  # the engine's cache no longer holds the fixed part of a prompt
            # the engine reports no probabilities when the token it picks is part of a UTF-8 character
            # (Chinese text): a bias makes it pick a plain letter; the probabilities are the logits' own
            out = self._server.handle_completions({"prompt": tokens, "n_predict": 1, "cache_prompt": reuse,
                                                   "temperature": 0.0, "top_k": 1, "n_probs": k,
                                                   "logit_bias": [[self._plain_token, 1000.0]]})
            self._raise_if_error(out)
        try:
            top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            return {int(t["id"]): float(t["logprob"]) for t in top}
        except (KeyError, IndexError, TypeError) as exc:
            raise GenerationError(f"llama.cpp returned no token probabilities: {str(out)[:200]}") from exc

    def generate(self, messages: list[ChatMessage], params: DecodingParams,
                 on_token: OnToken | None = None) -> Generation:
        req: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
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
            try:
                fixed, steps = self._evaluate_fixed_part(messages)
                # after the fixed part's steps, the engine evaluates exactly the rest; without them, all of it
                req["cache_prompt"] = fixed > 0
                if on_token is None:
                    out = self._server.handle_chat_completions(req)
                    self._raise_if_error(out)
                    self._finish(steps, dict(out.get("timings") or {}), fixed)
                    choice = out["choices"][0]
                    usage = out.get("usage") or {}
                    return Generation(text=choice["message"].get("content") or "", model_id=self.id,
                                      prompt_tokens=usage.get("prompt_tokens"),
                                      completion_tokens=usage.get("completion_tokens"),
                                      finish_reason=choice.get("finish_reason"), total_s=time.perf_counter() - t0)
                parts: list[str] = []
                state: dict[str, Any] = {"first": None, "usage": {}, "finish": None, "error": None, "timings": {}}

                def callback(chunk: dict[str, Any]) -> None:
                    if "error" in chunk:
                        state["error"] = chunk
                        return
                    if chunk.get("usage"):
                        state["usage"] = chunk["usage"]
                    if chunk.get("timings"):
                        state["timings"] = dict(chunk["timings"])
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
                self._finish(steps, state["timings"], fixed)
            except BaseException:
                self._held = None  # the engine's cache is in an unknown state: the next answer starts cold
                raise
        usage = state["usage"]
        return Generation(text="".join(parts), model_id=self.id, prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), finish_reason=state["finish"],
                          first_token_s=state["first"], total_s=time.perf_counter() - t0)

    # -- the fixed part of the prompt (bastion.generation.prompt_prefix) ---------------------------
    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            r = self._http.post(path, json=body)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise GenerationError(f"llama.cpp's {path} endpoint failed: {exc}") from exc

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens the engine makes of ``messages`` (its chat template, then its tokenizer, as a chat request)."""
        prompt = self._post("/apply-template", {"messages": messages})["prompt"]
        return list(self._post("/tokenize", {"content": prompt, "add_special": True})["tokens"])

    def _plan(self, messages: list[ChatMessage]) -> tuple[list[int], int]:
        """The prompt's tokens and P, the length of its fixed part (0: not split).

        The fixed part is what the prompt shares with a probe: the same messages with the last one
        emptied (every message before the last one, and the last one's role header).
        """
        tokens = self._prompt_tokens([m.to_dict() for m in messages])
        if len(messages) < 2:
            return tokens, 0
        key = tuple((m.role, m.content) for m in messages[:-1]) + ((messages[-1].role, ""),)
        if self._probe is None or self._probe[0] != key:
            self._probe = (key, self._prompt_tokens([{"role": r, "content": c} for r, c in key]))
        return tokens, fixed_length(tokens, self._probe[1])

    def _step(self, tokens: list[int], *, reuse: bool) -> dict[str, Any]:
        """Evaluate ``tokens`` (reusing the cached ones when ``reuse``); the engine samples one token, unused."""
        out = self._server.handle_completions({"prompt": tokens, "n_predict": 1, "cache_prompt": reuse,
                                               "temperature": 0.0, "top_k": 1})
        self._raise_if_error(out)
        return dict(out.get("timings") or {})

    def _evaluate_fixed_part(self, messages: list[ChatMessage]) -> tuple[int, list[dict[str, Any]]]:
        """Steps 1 and 2: leave the engine's cache holding exactly the fixed part; returns (P, the steps' timings).

        P = 0: the prompt is evaluated in one go (too short to split, or this engine cannot split).
        """
        if not self._split:
            return 0, []
        tokens, fixed = self._plan(messages)
        if fixed == 0 or len(tokens) >= self.context_window:  # an overlong prompt fails in the chat request
            self._held = None
            return 0, []
        prefix = tuple(tokens[:fixed])
        warm = self.prompt_cache and self._held == prefix
        self._held = None
        steps: list[dict[str, Any]] = []
        for cold in ((False, True) if warm else (True,)):
            if cold:
                steps.append(self._step(tokens[:fixed - 1], reuse=False))
            last = self._step(tokens[:fixed], reuse=True)
            steps.append(last)
            if (int(last.get("cache_n", -1)), int(last.get("prompt_n", -1))) == (fixed - 1, 1):
                self._held = prefix
                return fixed, steps
        # the engine re-evaluated more than the last token (a sliding-window or recurrent model keeps
        # no partial state): from now on every prompt is evaluated in one go, as on a cold engine
        log.warning("llm_prompt_prefix_unsupported model=%s fixed=%d cache_n=%s prompt_n=%s", self.id, fixed,
                    last.get("cache_n"), last.get("prompt_n"))
        self._split = False
        return 0, []

    def _finish(self, steps: list[dict[str, Any]], final: dict[str, Any], fixed: int) -> None:
        """Record the answer's timings; a chat request that did not continue at P stops the splitting."""
        self.last_timings = merge_timings(steps, final, fixed)
        if fixed and int(final.get("cache_n", -1)) != fixed:
            log.warning("llm_prompt_prefix_mismatch model=%s fixed=%d cache_n=%s", self.id, fixed,
                        final.get("cache_n"))
            self._split = False
            self._held = None

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
