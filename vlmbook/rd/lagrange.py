"""Choosing an operating point by minimising R + λD, and the convex hull it traces (Chapter 1 §1.6)."""
from __future__ import annotations

import numpy as np


def _points(rates, distortions) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rates, dtype=np.float64).ravel()
    d = np.asarray(distortions, dtype=np.float64).ravel()
    if r.shape != d.shape or r.size == 0:
        raise ValueError(f"rates and distortions must be non-empty and the same length, got {r.size} and {d.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise ValueError("rates and distortions must be finite")
    return r, d


def lagrangian_choice(rates, distortions, lam: float) -> int:
    """Index of the operating point minimising J = R + λ·D (ties go to the lower rate)."""
    if not lam >= 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    r, d = _points(rates, distortions)
    j = r + lam * d
    best = np.flatnonzero(j <= j.min() + 1e-12)
    return int(best[np.argmin(r[best])])


def lower_convex_hull(rates, distortions) -> np.ndarray:
    """Indices (by increasing rate) of the points on the lower-left convex hull of the (R, D) cloud.

    These are exactly the points some λ ≥ 0 selects: the rest are never chosen.
    """
    r, d = _points(rates, distortions)
    order = np.lexsort((d, r))
    hull: list[int] = []
    for i in order:
        if hull and d[i] >= d[hull[-1]]:
            continue  # dominated: more (or equal) rate for no less distortion
        while len(hull) >= 2:
            i1, i2 = hull[-2], hull[-1]
            cross = (r[i2] - r[i1]) * (d[i] - d[i1]) - (d[i2] - d[i1]) * (r[i] - r[i1])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(int(i))
    return np.array(hull, dtype=np.int64)


def lambda_sweep(rates, distortions, lambdas) -> np.ndarray:
    """The chosen index for each λ in ``lambdas``."""
    return np.array([lagrangian_choice(rates, distortions, float(l)) for l in np.atleast_1d(lambdas)])
