"""Scalar quantisers: uniform, Lloyd–Max, and entropy-coded quantisation (Chapter 1 §1.4–1.5)."""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.stats import norm

from .info import entropy
from .theory import gaussian_rd

#: High-rate gap of entropy-coded uniform quantisation to R(D), in bits, equal to ½ log2(2πe/12).
ECSQ_GAP_BITS = 0.5 * np.log2(2 * np.pi * np.e / 12)
#: The same gap as an SNR loss in dB, equal to 10 log10(πe/6).
ECSQ_GAP_DB = 10 * np.log10(np.pi * np.e / 6)


@dataclasses.dataclass(frozen=True)
class ScalarQuantizer:
    """Decision thresholds (L−1,) and reconstruction levels (L,), both increasing."""

    thresholds: np.ndarray
    levels: np.ndarray

    def __post_init__(self) -> None:
        t, c = np.asarray(self.thresholds), np.asarray(self.levels)
        if c.ndim != 1 or t.shape != (c.size - 1,):
            raise ValueError(f"need L levels and L-1 thresholds, got {c.shape} and {t.shape}")
        if np.any(np.diff(t) < 0) or np.any(np.diff(c) < 0):
            raise ValueError("thresholds and levels must be non-decreasing")

    def index(self, x) -> np.ndarray:
        """Cell index of each sample (int64, same shape as x)."""
        return np.searchsorted(self.thresholds, np.asarray(x, dtype=np.float64), side="right")

    def __call__(self, x) -> np.ndarray:
        """Quantised values (same shape as x)."""
        return self.levels[self.index(x)]


def uniform_quantize(x, step: float, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mid-tread uniform quantiser: (indices k = round((x − offset)/Δ), values offset + kΔ)."""
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    k = np.round((np.asarray(x, dtype=np.float64) - offset) / step).astype(np.int64)
    return k, offset + k * step


def uniform_quantizer(levels: int, step: float) -> ScalarQuantizer:
    """A symmetric L-level uniform quantiser with step Δ (mid-rise for even L)."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    c = (np.arange(levels) - (levels - 1) / 2) * step
    return ScalarQuantizer((c[:-1] + c[1:]) / 2, c)


def _gaussian_cell_moments(a: np.ndarray, b: np.ndarray, sigma: float) -> tuple[np.ndarray, ...]:
    # ∫φ, ∫xφ, ∫x²φ over [a, b] for N(0, σ²), in closed form.
    za, zb = a / sigma, b / sigma
    p = norm.cdf(zb) - norm.cdf(za)
    pa, pb = norm.pdf(za), norm.pdf(zb)
    m1 = sigma * (pa - pb)
    za_f, zb_f = np.where(np.isfinite(za), za, 0.0), np.where(np.isfinite(zb), zb, 0.0)
    m2 = sigma**2 * (p + za_f * pa - zb_f * pb)
    return p, m1, m2


def gaussian_mse(q: ScalarQuantizer, variance: float = 1.0) -> float:
    """Exact E[(X − q(X))²] for X ~ N(0, σ²)."""
    sigma = float(np.sqrt(variance))
    edges = np.concatenate([[-np.inf], q.thresholds, [np.inf]])
    p, m1, m2 = _gaussian_cell_moments(edges[:-1], edges[1:], sigma)
    c = q.levels
    return float(np.sum(m2 - 2 * c * m1 + c * c * p))


def lloyd_max_gaussian(levels: int, variance: float = 1.0, iters: int = 500, tol: float = 1e-12) -> ScalarQuantizer:
    """The MSE-optimal L-level quantiser for N(0, σ²), by Lloyd's iteration on exact cell moments."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    sigma = float(np.sqrt(variance))
    c = norm.ppf((np.arange(levels) + 0.5) / levels) * sigma
    for _ in range(iters):
        t = (c[:-1] + c[1:]) / 2
        edges = np.concatenate([[-np.inf], t, [np.inf]])
        p, m1, _ = _gaussian_cell_moments(edges[:-1], edges[1:], sigma)
        new_c = m1 / np.maximum(p, 1e-300)
        if np.max(np.abs(new_c - c)) < tol:
            c = new_c
            break
        c = new_c
    return ScalarQuantizer((c[:-1] + c[1:]) / 2, c)


def lloyd_max(samples, levels: int, iters: int = 200, tol: float = 1e-9) -> ScalarQuantizer:
    """An L-level quantiser fitted to 1-D samples by Lloyd's algorithm (1-D k-means)."""
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    if levels < 2 or x.size < levels:
        raise ValueError(f"need levels >= 2 and at least that many samples, got {levels} and {x.size}")
    c = np.quantile(x, (np.arange(levels) + 0.5) / levels)
    for _ in range(iters):
        t = (c[:-1] + c[1:]) / 2
        idx = np.searchsorted(t, x, side="right")
        sums = np.bincount(idx, weights=x, minlength=levels)
        counts = np.bincount(idx, minlength=levels)
        new_c = np.where(counts > 0, sums / np.maximum(counts, 1), c)  # an empty cell keeps its level
        new_c = np.sort(new_c)
        if np.max(np.abs(new_c - c)) < tol:
            c = new_c
            break
        c = new_c
    return ScalarQuantizer((c[:-1] + c[1:]) / 2, c)


def best_uniform_gaussian(levels: int, variance: float = 1.0) -> tuple[ScalarQuantizer, float]:
    """The L-level uniform quantiser with the step that minimises Gaussian MSE: (quantiser, step)."""
    from scipy.optimize import minimize_scalar

    sigma = float(np.sqrt(variance))
    res = minimize_scalar(lambda s: gaussian_mse(uniform_quantizer(levels, s), variance),
                          bounds=(1e-3 * sigma, 4 * sigma), method="bounded", options={"xatol": 1e-10})
    return uniform_quantizer(levels, float(res.x)), float(res.x)


@dataclasses.dataclass(frozen=True)
class ECSQPoint:
    """Rate and distortion of entropy-coded uniform quantisation at one step size."""

    step: float
    rate: float  # entropy of the quantiser index, bits/sample
    distortion: float  # mean squared error
    rd_bound: float  # R(D) of the Gaussian at that distortion

    @property
    def gap(self) -> float:
        return self.rate - self.rd_bound


def ecsq_gaussian(step: float, variance: float = 1.0, centroid: bool = False) -> ECSQPoint:
    """Exact rate (index entropy) and MSE of a mid-tread uniform quantiser on N(0, σ²)."""
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    sigma = float(np.sqrt(variance))
    kmax = int(np.ceil(9 * sigma / step)) + 1
    k = np.arange(-kmax, kmax + 1)
    a, b = (k - 0.5) * step, (k + 0.5) * step
    a[0], b[-1] = -np.inf, np.inf
    p, m1, m2 = _gaussian_cell_moments(a, b, sigma)
    c = np.where(p > 1e-300, m1 / np.maximum(p, 1e-300), k * step) if centroid else k * step
    d = float(np.sum(m2 - 2 * c * m1 + c * c * p))
    p = p / p.sum()
    rate = float(entropy(p))
    return ECSQPoint(step, rate, d, gaussian_rd(d, variance))


def ecsq_empirical(samples, step: float) -> ECSQPoint:
    """Measured index entropy and MSE of uniform quantisation on samples (variance from samples)."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("need at least two samples")
    k, xq = uniform_quantize(x, step)
    _, counts = np.unique(k, return_counts=True)
    rate = float(entropy(counts / counts.sum()))
    d = float(np.mean((x - xq) ** 2))
    return ECSQPoint(step, rate, d, gaussian_rd(d, float(np.var(x))))
