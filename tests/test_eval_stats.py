"""vlmbook.eval.stats against scipy.stats on fixed data (Chapter 7 §7.2)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vlmbook.eval.stats import bootstrap_ci, mcnemar_exact, mean_std, paired_bootstrap, summarize_seeds

RNG = np.random.default_rng(7)
A = RNG.random(300) < 0.62          # fixed "model A" correctness on 300 questions
B = np.where(RNG.random(300) < 0.85, A, ~A)  # B agrees with A on ~85 % of questions


def test_mean_std():
    assert mean_std([0.5, 0.7, 0.6]) == pytest.approx((0.6, 0.1))
    assert mean_std([0.4]) == (0.4, 0.0)
    assert summarize_seeds({0: 0.5, 1: 0.7, 2: 0.6}) == pytest.approx(
        {"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7, "seeds": 3})
    for bad in ([], [[1, 2]], [np.nan]):
        with pytest.raises(ValueError):
            mean_std(bad)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_matches_scipy(method):
    ours = bootstrap_ci(A, method=method, n_resamples=20000, seed=1)
    ref = stats.bootstrap((A.astype(float),), np.mean, method="BCa" if method == "bca" else "percentile",
                          n_resamples=20000, rng=np.random.default_rng(2)).confidence_interval
    # different resamples: endpoints agree to about one question in 300
    assert ours[0] == pytest.approx(ref.low, abs=1.5 / len(A))
    assert ours[1] == pytest.approx(ref.high, abs=1.5 / len(A))
    assert ours[0] < A.mean() < ours[1]


def test_bootstrap_golden_and_properties():
    lo, hi = bootstrap_ci(A, method="bca", seed=0, n_resamples=2000)
    assert (round(lo, 4), round(hi, 4)) == (0.5433, 0.6567)
    assert bootstrap_ci(A, seed=0, n_resamples=2000) == (lo, hi)  # seeded
    # a skewed sample (few errors): BCa moves the interval towards 1 compared with the percentile one
    few = np.r_[np.ones(95), np.zeros(5)]
    p, b = bootstrap_ci(few, method="percentile"), bootstrap_ci(few, method="bca")
    assert b[0] <= p[0] and b[1] <= 1.0
    # more questions -> narrower interval
    wide = bootstrap_ci(A[:60], method="percentile")
    narrow = bootstrap_ci(A, method="percentile")
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    # a constant vector has a degenerate interval
    assert bootstrap_ci(np.ones(20)) == (1.0, 1.0)
    for kw in ({"method": "t"}, {"confidence": 1.0}, {"n_resamples": 10}):
        with pytest.raises(ValueError):
            bootstrap_ci(A, **kw)
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_ci([0, 2, 1])


def test_mcnemar_matches_binomtest():
    r = mcnemar_exact(A, B)
    b, c = r["only_a"], r["only_b"]
    assert b == int(np.sum(A & ~B)) and c == int(np.sum(~A & B))
    assert r["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    # (700, 400): over 1,023 discordant questions, where 2.0 ** n overflows a float
    for b, c in ((0, 0), (3, 0), (10, 12), (30, 12), (1, 40), (700, 400), (560, 540)):
        a = np.r_[np.ones(b), np.zeros(c), np.ones(5)]
        bb = np.r_[np.zeros(b), np.ones(c), np.ones(5)]
        ref = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        assert mcnemar_exact(a, bb)["p_value"] == pytest.approx(ref, rel=1e-12)
    assert mcnemar_exact(A, A)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact(A, B[:-1])


def test_paired_bootstrap():
    r = paired_bootstrap(A, B, n_resamples=20000, seed=0)
    assert r["difference"] == pytest.approx(A.mean() - B.mean())
    assert r["low"] < r["difference"] < r["high"]
    # scipy's paired bootstrap of the mean difference gives the same percentile interval
    ref = stats.bootstrap((A.astype(float), B.astype(float)), lambda x, y: np.mean(x - y), paired=True,
                          vectorized=False, method="percentile", n_resamples=20000,
                          rng=np.random.default_rng(3)).confidence_interval
    assert r["low"] == pytest.approx(ref.low, abs=1.5 / len(A))
    assert r["high"] == pytest.approx(ref.high, abs=1.5 / len(A))
    same = paired_bootstrap(A, A)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    # a real difference: B always right where A is wrong
    better = paired_bootstrap(A | True, A)
    assert better["low"] > 0 and better["p_value"] < 0.001
    # the paired test and McNemar agree on which differences are real
    assert (mcnemar_exact(A | True, A)["p_value"] < 0.05) == (better["p_value"] < 0.05)
