"""Statistics that say when a difference is real: seeds, bootstrap CIs, paired tests (Chapter 7 §7.2).

Accuracy is the mean of a 0/1 vector over questions. Its uncertainty has two sources: which
questions were asked (bootstrap over questions) and which seed trained the model (mean ± std over
seeds). Two models asked the *same* questions are compared pairwise: only the questions where
they disagree carry information (exact McNemar test), and a paired bootstrap resamples questions
jointly for both models.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
from scipy.special import ndtr, ndtri


def _as_binary(x: Sequence, name: str = "correct") -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 or booleans")
    return a.astype(float)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of per-seed scores. §7.2."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"mean_std needs a non-empty 1-D array of finite numbers, got {values!r}")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _resample_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    # Sums of a 0/1 vector resampled with replacement: draw indices in chunks to bound memory.
    n, out, done = len(x), np.empty(n_resamples), 0
    chunk = max(1, 2_000_000 // n)
    while done < n_resamples:
        k = min(chunk, n_resamples - done)
        out[done:done + k] = x[rng.integers(0, n, (k, n))].mean(1)
        done += k
    return out


def bootstrap_ci(correct: Sequence, confidence: float = 0.95, method: str = "bca", n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
    """(n,) 0/1 -> (low, high) bootstrap CI on accuracy, ``percentile`` or ``bca``. §7.2.

    BCa (bias-corrected and accelerated; Efron 1987) shifts the percentiles by the bootstrap
    distribution's median bias ``z0`` and the jackknife skewness ``a``.
    """
    x = _as_binary(correct)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100, got {n_resamples}")
    theta = _resample_means(x, n_resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    if method == "percentile":
        q = np.array([alpha, 1 - alpha])
    else:
        q = _bca_levels(x, theta, alpha)
    lo, hi = np.percentile(theta, 100 * q)
    return float(lo), float(hi)


def _bca_levels(x: np.ndarray, theta: np.ndarray, alpha: float) -> np.ndarray:
    stat = x.mean()
    z0 = ndtri((np.sum(theta < stat) + 0.5 * np.sum(theta == stat)) / len(theta))
    n = len(x)
    jack = (x.sum() - x) / (n - 1)  # leave-one-out means
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = np.sum(d**3) / denom if denom > 0 else 0.0
    z = ndtri(np.array([alpha, 1 - alpha]))
    levels = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    return np.nan_to_num(levels, nan=0.5)


def mcnemar_exact(correct_a: Sequence, correct_b: Sequence) -> dict[str, float]:
    """Exact McNemar test on paired 0/1 vectors: discordant counts and two-sided p. §7.2.

    Under "no difference" each of the ``b + c`` questions that exactly one model gets right is a
    fair coin: ``p = min(1, 2 · P[Binomial(b + c, ½) <= min(b, c)])``.
    """
    a, b_ = _as_binary(correct_a, "correct_a"), _as_binary(correct_b, "correct_b")
    if a.shape != b_.shape:
        raise ValueError(f"paired vectors need the same length, got {a.size} and {b_.size}")
    b = int(np.sum((a == 1) & (b_ == 0)))
    c = int(np.sum((a == 0) & (b_ == 1)))
    n = b + c
    if n == 0:
        p = 1.0
    else:
        k = min(b, c)
        # exact integer arithmetic: 2.0**n overflows a float once n > 1023 discordant questions
        p = min(1.0, float(Fraction(2 * sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)))
    return {"only_a": b, "only_b": c, "p_value": p, "difference": float(a.mean() - b_.mean())}


def paired_bootstrap(correct_a: Sequence, correct_b: Sequence, confidence: float = 0.95, n_resamples: int = 9999,
                     seed: int = 0) -> dict[str, float]:
    """Accuracy difference a − b with a percentile CI from resampling questions jointly, and a two-sided p. §7.2.

    The p-value is twice the smaller tail of the resampled differences around zero (the
    bootstrap-percentile test); a CI that excludes 0 and p < 1 − confidence agree.
    """
    a, b = _as_binary(correct_a, "correct_a"), _as_binary(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired vectors need the same length, got {a.size} and {b.size}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    d = a - b
    diffs = np.empty(n_resamples)
    rng = np.random.default_rng(seed)
    n, done, chunk = len(d), 0, max(1, 2_000_000 // len(d))
    while done < n_resamples:
        k = min(chunk, n_resamples - done)
        diffs[done:done + k] = d[rng.integers(0, n, (k, n))].mean(1)
        done += k
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(diffs, [100 * alpha, 100 * (1 - alpha)])
    if not d.any():
        p = 1.0
    else:
        p = float(min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))))
    return {"difference": float(d.mean()), "low": float(lo), "high": float(hi), "p_value": p}


def summarize_seeds(accuracies: dict[int, float]) -> dict[str, float]:
    """{seed: accuracy} -> mean, std, min, max and number of seeds. §7.2."""
    if not accuracies:
        raise ValueError("summarize_seeds needs at least one seed")
    v = list(accuracies.values())
    m, s = mean_std(v)
    return {"mean": m, "std": s, "min": float(min(v)), "max": float(max(v)), "seeds": len(v)}
