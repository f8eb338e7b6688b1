"""Uncertainty for evaluation figures: bootstrap confidence intervals and paired comparisons.

Numpy only (no scipy in the product). Every function is deterministic for a given ``seed``.
Comparing two runs outcome by outcome (``compare_outcomes``) lives in
:mod:`bastion.evaluation.metrics`, which imports this module, so that this one never imports it.

>>> bootstrap_ci([1.0, 1.0, 1.0])
(1.0, 1.0)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

EXACT_MAX = 16  # up to this many non-zero differences, the sign-flip test enumerates all 2**n flips
_CHUNK_CELLS = 4_000_000  # resample matrix cells drawn at once, bounding memory on large sets


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _bootstrap_means(x: npt.NDArray[np.float64], resamples: int, seed: int) -> npt.NDArray[np.float64]:
    """The means of ``resamples`` resamples (with replacement) of ``x``."""
    n = len(x)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    parts = []
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, resamples - start), n))
        parts.append(x[idx].mean(axis=1))
    return np.concatenate(parts)


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean.

    Args:
        values: One value per item (e.g. 1.0/0.0 per item for a rate).
        resamples: How many resamples of the items to draw.
        seed: Seed of the random generator; the same seed gives the same interval.
        confidence: The interval's coverage, e.g. 0.95.

    Returns:
        ``(lo, hi)``, ``None`` for no values, ``(v, v)`` for a single value.

    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 20, seed=1)
    >>> lo < 0.5 < hi
    True
    >>> bootstrap_ci([]) is None
    True
    """
    _check(resamples, confidence)
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    if x.size == 1:
        return float(x[0]), float(x[0])
    means = _bootstrap_means(x, resamples, seed)
    alpha = 1.0 - confidence
    lo, hi = np.percentile(means, [100.0 * alpha / 2, 100.0 * (1.0 - alpha / 2)])
    return float(lo), float(hi)


def sign_flip_p_value(diffs: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test (mean difference is zero).

    Exact (all ``2**n`` flips) when at most ``EXACT_MAX`` differences are non-zero; otherwise
    ``resamples`` random flips, with +1 smoothing so the p-value is never 0.

    >>> sign_flip_p_value([1.0, 2.0, 3.0])  # 2 of the 8 flips reach |sum| >= 6
    0.25
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0.0]
    m = d.size
    if m == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if m <= EXACT_MAX:
        bits = (np.arange(2**m, dtype=np.int64)[:, None] >> np.arange(m, dtype=np.int64)) & 1
        sums = (bits * 2 - 1) @ d
        return float(np.mean(np.abs(sums) >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    rows = max(1, _CHUNK_CELLS // m)
    for start in range(0, resamples, rows):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(rows, resamples - start), m))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (hits + 1) / (resamples + 1)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare two configurations on the same items, value by value.

    Args:
        a: Per-item values under the first (baseline) configuration.
        b: Per-item values under the second configuration, in the same item order.
        resamples: Bootstrap resamples for the interval, and random flips when the test is not exact.
        seed: Seed of the random generator.
        confidence: Coverage of the interval; the test is significant when ``p_value < 1 - confidence``.

    Returns:
        ``{"a", "b", "diff" (mean b - mean a), "ci" ([lo, hi] of the diff, paired bootstrap),
        "p_value" (sign-flip permutation test), "n", "significant"}``.

    Raises:
        ValueError: ``a`` and ``b`` differ in length, or are empty.

    >>> r = paired_difference([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    >>> r["diff"], r["p_value"], r["significant"]
    (1.0, 0.25, False)
    """
    _check(resamples, confidence)
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(f"paired values must have the same length, got {len(xa)} and {len(xb)}")
    if xa.size == 0:
        raise ValueError("no paired values to compare")
    d = xb - xa
    ci = bootstrap_ci(d.tolist(), resamples=resamples, seed=seed, confidence=confidence)
    assert ci is not None  # d is not empty
    p = sign_flip_p_value(d.tolist(), resamples=resamples, seed=seed)
    return {
        "a": float(xa.mean()),
        "b": float(xb.mean()),
        "diff": float(d.mean()),
        "ci": [ci[0], ci[1]],
        "p_value": p,
        "n": int(xa.size),
        "significant": bool(p < 1.0 - confidence),
    }


__all__ = ["EXACT_MAX", "bootstrap_ci", "paired_difference", "sign_flip_p_value"]
