"""Reusing the fixed start of the prompt without changing the answer (``[llm] prompt_cache``).

Every answer prompt starts with a fixed part: the system prompt and the few-shot examples (every
message before the last one, and the last message's role header). Keeping that part's KV cache
between answers skips most of the prompt processing, but llama.cpp's result for a token depends on
the batch it is evaluated in: a token evaluated alone, or in a batch that starts elsewhere, rounds
differently, and greedy decoding of a small model forks at near-ties. The engine's own reuse
(evaluate whatever follows the longest prefix shared with the previous request) therefore made an
answer depend on the question asked before it.

So :class:`~bastion.generation.llamacpp.LlamaCppLLM` evaluates every prompt of N tokens whose fixed
part is P tokens in the same three steps, whether the fixed part is cached or not:

1. tokens [0, P-1) as batches of their own, skipped when the engine still holds them;
2. token P-1 alone, which also cuts back whatever the previous answer left after the fixed part;
3. tokens [P, N) and then the answer.

A warm answer is then computed with exactly the operations of a cold one (same batches, same KV
cells), so it is the same answer token for token; the cache only saves step 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fixed_length(prompt: Sequence[int], probe: Sequence[int]) -> int:
    """P: how many tokens ``prompt`` shares with ``probe`` (the same messages, the last one emptied).

    0 when that leaves fewer than 2 fixed tokens or no variable one: the prompt is then evaluated in
    one go, never reused.

    >>> fixed_length([1, 2, 3, 4, 5], [1, 2, 3, 9])
    3
    >>> fixed_length([1, 2, 3], [1, 2, 3])  # nothing varies
    0
    >>> fixed_length([1, 2, 3], [1, 7])
    0
    """
    n = 0
    for a, b in zip(prompt, probe, strict=False):
        if a != b:
            break
        n += 1
    return n if 2 <= n < len(prompt) else 0


def merge_timings(steps: Sequence[dict[str, Any]], final: dict[str, Any], fixed: int) -> dict[str, Any]:
    """The engine's timings of one answer over its steps: ``prompt_n`` = prompt tokens evaluated,
    ``cache_n`` = prompt tokens taken from the cache, ``fixed_n`` = P (0: not split).

    >>> t = merge_timings([{"prompt_n": 1, "prompt_ms": 5.0}], {"prompt_n": 9, "cache_n": 4, "prompt_ms": 45.0}, 4)
    >>> t["prompt_n"], t["cache_n"], t["prompt_ms"], t["prompt_per_second"]
    (10, 3, 50.0, 200.0)
    """
    out = dict(final)
    total = int(final.get("prompt_n", 0)) + int(final.get("cache_n", 0))
    n = int(final.get("prompt_n", 0)) + sum(int(s.get("prompt_n", 0)) for s in steps)
    ms = float(final.get("prompt_ms", 0.0)) + sum(float(s.get("prompt_ms", 0.0)) for s in steps)
    out.update(prompt_n=n, cache_n=total - n, prompt_ms=ms, fixed_n=fixed,
               prompt_per_token_ms=ms / n if n else 0.0, prompt_per_second=1000.0 * n / ms if ms else 0.0)
    return out


__all__ = ["fixed_length", "merge_timings"]
