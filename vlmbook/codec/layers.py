"""Transforms of learned codecs: GDN / IGDN and a gradient-friendly lower bound (Chapter 3 §3.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # pass the gradient when x is above the bound, or when the step would move x up to it
        keep = (x >= ctx.bound) | (grad < 0)
        return grad * keep, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound) whose gradient still flows when it pushes x back above the bound. §3.1."""
    return _LowerBound.apply(x, float(bound))


class GDN(nn.Module):
    """Generalised divisive normalisation (B, C, H, W) -> same: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

    ``inverse=True`` gives IGDN (multiply instead of divide), used in the synthesis transform.
    beta and gamma are kept non-negative by storing their square roots (plus a small pedestal),
    as in Ballé et al. 2016. Chapter 3 §3.1.
    """

    #: 2^-36 = (2^-18)^2: the reparametrisation offset squared, as in tensorflow-compression and CompressAI
    pedestal = 2.0 ** -36

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"GDN needs channels >= 1, got {channels}")
        self.inverse = bool(inverse)
        self.beta_min = float(beta_min)
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-negative (beta (C,), gamma (C, C)) actually used."""
        beta = lower_bound(self.beta, (self.beta_min + self.pedestal) ** 0.5) ** 2 - self.pedestal
        gamma = lower_bound(self.gamma, self.pedestal ** 0.5) ** 2 - self.pedestal
        return beta, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.beta.numel():
            raise ValueError(f"GDN expects (B, {self.beta.numel()}, H, W), got {tuple(x.shape)}")
        beta, gamma = self.effective()
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    """k x k convolution with 'same' padding, downsampling by ``stride``."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """k x k transposed convolution upsampling exactly by ``stride``."""
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)
