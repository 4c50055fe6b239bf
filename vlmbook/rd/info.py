"""Entropy, cross-entropy, KL divergence and mutual information (Chapter 1 §1.2)."""
from __future__ import annotations

import numpy as np

from ._checks import as_prob, log_base


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0 by continuity; the mask keeps log(0) warnings out of the output.
    out = np.zeros(np.broadcast(x, y).shape)
    mask = np.broadcast_to(x > 0, out.shape)
    xb, yb = np.broadcast_to(x, out.shape), np.broadcast_to(y, out.shape)
    out[mask] = xb[mask] * np.log(yb[mask])
    return out


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_prob(p, "p"), as_prob(q, "q")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"p and q must have the same support size, got {a.shape[-1]} and {b.shape[-1]}")
    return a, b


def entropy(p, base: float = 2.0) -> float | np.ndarray:
    """H(p) = −Σ p log p over the last axis (bits by default). Chapter 1 §1.2."""
    a = as_prob(p)
    return -_xlogy(a, a).sum(axis=-1) / log_base(base)


def cross_entropy(p, q, base: float = 2.0) -> float | np.ndarray:
    """H(p, q) = −Σ p log q: the average code length when coding p with a code built for q."""
    a, b = _pair(p, q)
    if np.any((a > 0) & (b == 0)):
        return np.inf
    return -_xlogy(a, np.where(b > 0, b, 1.0)).sum(axis=-1) / log_base(base)


def kl_divergence(p, q, base: float = 2.0) -> float | np.ndarray:
    """D(p‖q) = H(p, q) − H(p) ≥ 0: the bits wasted by coding p with q's code."""
    a, b = _pair(p, q)
    if np.any((a > 0) & (b == 0)):
        return np.inf
    ratio = np.where(a > 0, a / np.where(b > 0, b, 1.0), 1.0)
    return _xlogy(a, ratio).sum(axis=-1) / log_base(base)


def mutual_information(joint, base: float = 2.0) -> float:
    """I(X; Y) = D(p(x, y) ‖ p(x) p(y)) for a 2-D joint table."""
    j = as_prob(joint, "joint", axis=None)
    if j.ndim != 2:
        raise ValueError(f"joint must be a 2-D table p(x, y), got shape {j.shape}")
    prod = j.sum(1, keepdims=True) * j.sum(0, keepdims=True)
    return float(kl_divergence(j.ravel(), prod.ravel(), base))


def empirical_distribution(values, support: int | None = None) -> np.ndarray:
    """Histogram of non-negative integer ``values`` normalised to a distribution."""
    v = np.asarray(values)
    if v.size == 0 or not np.issubdtype(v.dtype, np.integer) or v.min() < 0:
        raise ValueError("values must be a non-empty array of non-negative integers")
    counts = np.bincount(v.ravel(), minlength=support or 0)
    return counts / counts.sum()
