"""Distortion metrics: MSE/PSNR, SSIM (written out) and MS-SSIM, Fréchet distance (Chapter 1 §1.7)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_batch(x, name: str) -> torch.Tensor:
    """Accept (H, W), (H, W, C) uint8/float arrays or (B, C, H, W)/(C, H, W) tensors; return (B, C, H, W) float."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.array(x, copy=True))  # callers' arrays may be read-only
        if t.ndim == 2:
            t = t[None, None]
        elif t.ndim == 3:
            t = t.permute(2, 0, 1)[None]
        elif t.ndim == 4:
            t = t.permute(0, 3, 1, 2)
    elif isinstance(x, torch.Tensor):
        t = x if x.ndim == 4 else x[None] if x.ndim == 3 else x[None, None] if x.ndim == 2 else x
    else:
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    if t.ndim != 4:
        raise ValueError(f"{name} must have 2 to 4 dimensions, got shape {tuple(x.shape)}")
    return t.double() if t.dtype == torch.float64 else t.float()


def _pair(x, y, data_range: float | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    is_uint8 = isinstance(x, np.ndarray) and x.dtype == np.uint8
    a, b = _as_batch(x, "x"), _as_batch(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if data_range is None:
        data_range = 255.0 if is_uint8 else 1.0
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return a, b, float(data_range)


def mse(x, y) -> float:
    """Mean squared error over all elements."""
    a, b, _ = _pair(x, y, 1.0)
    return float(torch.mean((a.double() - b.double()) ** 2))


def psnr(x, y, data_range: float | None = None) -> float:
    """10 log10(MAX² / MSE) in dB (MAX = 255 for uint8 arrays, else 1); ∞ for identical inputs."""
    a, b, peak = _pair(x, y, data_range)
    return psnr_from_mse(float(torch.mean((a.double() - b.double()) ** 2)), peak)


def psnr_from_mse(mse, data_range: float = 1.0) -> float:
    """10 log10(MAX² / MSE) in dB of an MSE already computed (a float or 0-dim tensor); ∞ for 0. §1.7.

    Trainers log the PSNR of the loss's own MSE with this, so every PSNR in the book is one formula."""
    m = float(mse)
    if not m >= 0:
        raise ValueError(f"mse must be >= 0, got {m}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return float("inf") if m == 0 else float(10.0 * np.log10(data_range**2 / m))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A normalised 1-D Gaussian window, shape (size,)."""
    if size < 1 or size % 2 == 0 or not sigma > 0:
        raise ValueError(f"window size must be a positive odd int and sigma > 0, got {size}, {sigma}")
    g = torch.arange(size, dtype=torch.float64) - size // 2
    w = torch.exp(-(g**2) / (2 * sigma**2))
    return w / w.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5,
             k1: float = 0.01, k2: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) pair -> (SSIM map, contrast–structure map), each (B, C, H−win+1, W−win+1)."""
    c = x.shape[1]
    w = gaussian_window(win, sigma).to(x)
    wx, wy = w.view(1, 1, 1, -1).repeat(c, 1, 1, 1), w.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, "valid" borders
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum * cs, cs


def ssim(x, y, data_range: float | None = None) -> float:
    """Mean SSIM of Wang et al. (2004): 11×11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03."""
    a, b, peak = _pair(x, y, data_range)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11×11 pixels, got {tuple(a.shape[-2:])}")
    return float(ssim_map(a, b, peak)[0].mean())


def ms_ssim(x, y, data_range: float | None = None) -> float:
    """Multi-scale SSIM (Wang et al., 2003), computed by ``pytorch_msssim``; needs sides > 160 px."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    a, b, peak = _pair(x, y, data_range)
    if min(a.shape[-2:]) <= 160:
        raise ValueError(f"MS-SSIM needs both image sides > 160 px (5 scales), got {tuple(a.shape[-2:])}")
    return float(_ms_ssim(a.float(), b.float(), data_range=peak, size_average=True))


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½): the distance FID applies to feature Gaussians."""
    from scipy.linalg import sqrtm

    m1, m2 = np.atleast_1d(np.asarray(mu1, float)), np.atleast_1d(np.asarray(mu2, float))
    s1, s2 = np.atleast_2d(np.asarray(cov1, float)), np.atleast_2d(np.asarray(cov2, float))
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"shape mismatch: mu {m1.shape}/{m2.shape}, cov {s1.shape}/{s2.shape}")
    import warnings

    with warnings.catch_warnings():  # near-singular covariances (few samples) still give a usable root
        warnings.simplefilter("ignore")
        covmean = sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # tiny imaginary parts from numerical error
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean))
