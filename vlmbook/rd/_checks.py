"""Input checks shared by the rate–distortion functions."""
from __future__ import annotations

import numpy as np


def as_prob(p, name: str = "p", axis: int | None = -1, atol: float = 1e-6) -> np.ndarray:
    """Return ``p`` as a float array after checking it is a probability distribution."""
    a = np.asarray(p, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(f"{name} has negative probabilities (min {a.min():.3g})")
    total = a.sum() if axis is None else a.sum(axis=axis)
    if not np.allclose(total, 1.0, atol=atol):
        raise ValueError(f"{name} must sum to 1 (sums to {np.ravel(total)[:3]})")
    return a


def positive(x, name: str) -> np.ndarray:
    """Return ``x`` as an array after checking every entry is finite and > 0."""
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {x!r}")
    return a


def log_base(base: float) -> float:
    if base <= 0 or base == 1:
        raise ValueError(f"base must be > 0 and != 1, got {base}")
    return float(np.log(base))
