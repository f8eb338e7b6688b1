from __future__ import annotations

import numpy as np
import pytest

from bastion.evaluation.stats import bootstrap_ci, paired_difference, sign_flip_p_value


def test_bootstrap_edges() -> None:
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([2.0] * 5) == (2.0, 2.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], resamples=0)


def test_bootstrap_contains_mean_narrows_and_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    small = rng.random(30).tolist()
    large = rng.random(3000).tolist()
    ci_small, ci_large = bootstrap_ci(small, seed=1), bootstrap_ci(large, seed=1)
    assert ci_small is not None and ci_large is not None
    assert ci_small[0] < np.mean(small) < ci_small[1]
    assert ci_large[0] < np.mean(large) < ci_large[1]
    assert ci_large[1] - ci_large[0] < (ci_small[1] - ci_small[0]) / 5
    assert bootstrap_ci(small, seed=1) == ci_small
    assert bootstrap_ci(small, seed=2) != ci_small
    # a 99% interval is wider than a 90% one
    ci99, ci90 = bootstrap_ci(small, confidence=0.99), bootstrap_ci(small, confidence=0.90)
    assert ci99 is not None and ci90 is not None and ci99[1] - ci99[0] > ci90[1] - ci90[0]


def test_bootstrap_matches_normal_approximation() -> None:
    # 0/1 values with p = 0.7, n = 400: standard error sqrt(.7 * .3 / 400) = 0.0229, 95% half-width 0.0449
    values = [1.0] * 280 + [0.0] * 120
    ci = bootstrap_ci(values, resamples=4000)
    assert ci is not None
    assert ci[0] == pytest.approx(0.7 - 0.0449, abs=0.006)
    assert ci[1] == pytest.approx(0.7 + 0.0449, abs=0.006)


def test_bootstrap_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(0).exponential(size=200)
    ours = bootstrap_ci(x.tolist(), resamples=5000, seed=0)
    theirs = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=5000, random_state=0).confidence_interval
    assert ours is not None
    assert ours[0] == pytest.approx(theirs.low, abs=0.03)
    assert ours[1] == pytest.approx(theirs.high, abs=0.03)


def test_exact_sign_flip_by_hand() -> None:
    # differences 1, 2, 3: the 8 signed sums are ±6, ±4, ±2, 0, 0; |sum| >= 6 for 2 of them
    assert sign_flip_p_value([1.0, 2.0, 3.0]) == 0.25
    # differences 1, -1, 2 (observed |sum| 2): |sums| are 4, 2, 0, 2, 2, 0, 2, 4 -> 6 of 8 reach 2
    assert sign_flip_p_value([1.0, -1.0, 2.0]) == 0.75
    # zeros do not count: five +1 and three 0 -> 2 of 32
    assert sign_flip_p_value([1.0] * 5 + [0.0] * 3) == 2 / 32
    assert sign_flip_p_value([0.0, 0.0]) == 1.0


def test_paired_difference_small_gap_not_significant() -> None:
    # 50 items, 0.70 vs 0.72: b loses 3 of a's successes and gains 4
    a = [1.0] * 35 + [0.0] * 15
    b = [1.0] * 32 + [0.0] * 3 + [1.0] * 4 + [0.0] * 11
    r = paired_difference(a, b)
    assert (r["a"], r["b"], r["n"]) == (0.70, 0.72, 50)
    assert r["diff"] == pytest.approx(0.02)
    assert not r["significant"] and r["p_value"] > 0.5
    assert r["ci"][0] < 0 < r["ci"][1]


def test_paired_difference_large_gap_significant() -> None:
    a = [1.0] * 15 + [0.0] * 35  # 0.30
    b = [1.0] * 50  # 1.00: 35 items better, none worse (random flips: 35 > 16)
    r = paired_difference(a, b, seed=5)
    assert r["significant"] and r["p_value"] == pytest.approx(1 / 2001)
    assert r["ci"][0] > 0.5
    assert paired_difference(a, b, seed=5) == r


def test_paired_difference_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1.0], [1.0, 0.0])
    with pytest.raises(ValueError):
        paired_difference([], [])
