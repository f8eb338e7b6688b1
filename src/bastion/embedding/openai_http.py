"""Opt-in remote embedder: any OpenAI-compatible ``/v1/embeddings`` endpoint (TEI, vLLM, Ollama)."""
from __future__ import annotations

import re
import time

import httpx
import numpy as np

from bastion.core.errors import EmbeddingError
from bastion.core.secrets import bearer_header

_CJK = re.compile(r"[\u3000-\u9fff\uf900-\ufaff]")


class OpenAIEmbedder:
    """Calls ``POST {url}/embeddings``; the API key comes only from an environment variable."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        dimension: int | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        query_prefix: str = "",
        passage_prefix: str = "",
        transport: httpx.BaseTransport | None = None,
    ):
        headers = bearer_header(api_key_env, "embedder.api_key_env", EmbeddingError)
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport)
        self._model = model
        self._retries = retries
        self._qp, self._pp = query_prefix, passage_prefix
        self.id = f"openai/{model}@{url.rstrip('/')}"
        self.dimension = dimension or self._embed(["dimension probe"]).shape[1]

    def _embed(self, texts: list[str]) -> np.ndarray:
        last: Exception | None = None
        for attempt in range(self._retries + 1):
            try:
                resp = self._client.post("/embeddings", json={"model": self._model, "input": texts})
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise EmbeddingError(f"embedding server answered HTTP {resp.status_code}: {resp.text[:200]}")
                if resp.status_code >= 400:
                    raise EmbeddingError(f"embedding server refused the request: HTTP {resp.status_code}: {resp.text[:200]}") from None
                data = sorted(resp.json()["data"], key=lambda d: d["index"])
                vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
                return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            except (httpx.HTTPError, EmbeddingError) as exc:
                last = exc
                if isinstance(exc, EmbeddingError) and "refused" in str(exc):
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt))
        raise EmbeddingError(f"embedding server {self._client.base_url} failed after {self._retries + 1} tries: {last}")

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._embed([self._pp + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self._qp + text])[0]

    def count_tokens(self, text: str) -> int:
        # No tokenizer is available for a remote model: a conservative estimate
        # (one token per CJK character, ~4 characters per token otherwise).
        cjk = len(_CJK.findall(text))
        return cjk + (len(text) - cjk) // 4 + 2
