"""Rate–distortion functions: the Gaussian closed form and Blahut–Arimoto (Chapter 1 §1.3)."""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from ._checks import as_prob, positive


def gaussian_rd(distortion, variance: float = 1.0):
    """R(D) = max(0, ½ log2(σ²/D)) bits per sample for a Gaussian source under MSE."""
    d = positive(distortion, "distortion")
    var = float(positive(variance, "variance"))
    r = np.maximum(0.0, 0.5 * np.log2(var / d))
    return float(r) if r.ndim == 0 else r


def gaussian_dr(rate, variance: float = 1.0):
    """D(R) = σ² 2^(−2R): each extra bit buys 6.02 dB."""
    r = np.asarray(rate, dtype=np.float64)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError(f"rate must be finite and >= 0, got {rate!r}")
    d = float(positive(variance, "variance")) * 2.0 ** (-2.0 * r)
    return float(d) if d.ndim == 0 else d


@dataclasses.dataclass(frozen=True)
class BAResult:
    """One point on a rate–distortion curve found by Blahut–Arimoto."""

    rate: float  # bits per source symbol
    distortion: float
    beta: float  # the slope parameter: −dR/dD = β / ln 2 (bits per unit distortion)
    q_y: np.ndarray  # optimal reproduction distribution, shape (n_y,)
    iterations: int


def blahut_arimoto(p_x, distortion, beta: float, tol: float = 1e-10, max_iter: int = 20_000) -> BAResult:
    """The R(D) point of slope −β for a discrete source p_x (n_x,) and distortion matrix (n_x, n_y).

    Alternates q(y|x) ∝ q(y) e^{−β d(x,y)} and q(y) = Σ_x p(x) q(y|x), in the log domain, until
    q(y) moves by less than ``tol``. (Blahut's rigorous stopping bound converges only
    sublinearly when the optimal q(y) is sparse, as it is for bounded sources under MSE.)
    """
    p = as_prob(p_x, "p_x")
    d = np.asarray(distortion, dtype=np.float64)
    if p.ndim != 1 or d.ndim != 2 or d.shape[0] != p.shape[0]:
        raise ValueError(f"need p_x of shape (n_x,) and distortion of shape (n_x, n_y), got {p.shape}, {d.shape}")
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("distortion must be finite and >= 0")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    log_q = np.full(d.shape[1], -np.log(d.shape[1]))
    keep = p > 0
    p, d = p[keep], d[keep]
    for it in range(1, max_iter + 1):
        log_cond = log_q[None, :] - beta * d
        log_cond -= logsumexp(log_cond, axis=1, keepdims=True)
        new_log_q = logsumexp(np.log(p)[:, None] + log_cond, axis=0)
        delta = np.max(np.abs(np.exp(new_log_q) - np.exp(log_q)))
        log_q = new_log_q
        if delta < tol:
            break
    log_cond = log_q[None, :] - beta * d
    log_cond -= logsumexp(log_cond, axis=1, keepdims=True)
    cond = np.exp(log_cond)
    dist = float(np.sum(p[:, None] * cond * d))
    safe_q = np.where(np.isfinite(log_q), log_q, 0.0)
    rate = float(np.sum(p[:, None] * cond * (log_cond - safe_q[None, :])) / np.log(2))
    return BAResult(max(rate, 0.0), dist, float(beta), np.exp(log_q), it)


def rd_curve(p_x, distortion, betas) -> tuple[np.ndarray, np.ndarray]:
    """(rates, distortions) traced by Blahut–Arimoto over slope parameters ``betas``."""
    pts = [blahut_arimoto(p_x, distortion, float(b)) for b in np.atleast_1d(betas)]
    return np.array([r.rate for r in pts]), np.array([r.distortion for r in pts])


def discretized_gaussian(n: int = 401, span: float = 7.0, variance: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian on a uniform grid of ``n`` points over ±span·σ: (grid (n,), probabilities (n,))."""
    if n < 3:
        raise ValueError(f"n must be >= 3, got {n}")
    sigma = float(np.sqrt(positive(variance, "variance")))
    x = np.linspace(-span * sigma, span * sigma, n)
    step = x[1] - x[0]
    p = norm.cdf(x + step / 2, scale=sigma) - norm.cdf(x - step / 2, scale=sigma)
    return x, p / p.sum()


def squared_error_matrix(x, y=None) -> np.ndarray:
    """d(x_i, y_j) = (x_i − y_j)², shape (len(x), len(y))."""
    x = np.asarray(x, dtype=np.float64)
    y = x if y is None else np.asarray(y, dtype=np.float64)
    return (x[:, None] - y[None, :]) ** 2


def hamming_matrix(n: int) -> np.ndarray:
    """d(x, y) = [x ≠ y] on n symbols (binary-source R(D) = h(p) − h(D))."""
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    return 1.0 - np.eye(n)


def binary_rd(distortion, p: float = 0.5):
    """R(D) = h(p) − h(D) for D < min(p, 1−p), else 0: a Bernoulli(p) source, Hamming distortion."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    d = np.asarray(distortion, dtype=np.float64)
    if np.any(d < 0):
        raise ValueError("distortion must be >= 0")
    h = lambda t: -(t * np.log2(np.clip(t, 1e-300, 1)) + (1 - t) * np.log2(np.clip(1 - t, 1e-300, 1)))  # noqa: E731
    r = np.where(d < min(p, 1 - p), h(p) - h(np.clip(d, 0, 0.5)), 0.0)
    return float(r) if r.ndim == 0 else r
