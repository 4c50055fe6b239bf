"""Autoregressive context model: a masked convolution over already-decoded latents (Minnen et al. 2018).

Chapter 3 §3.8. The hyperprior predicts every y element from z alone, so all of y decodes in
one parallel pass. A context model also looks at the neighbours above and to the left that
the decoder already has, which predicts y better (fewer bits) but forces the decoder to visit
the latent grid one position at a time. Here the context model sits on top of a trained,
frozen hyperprior and codes the *same* integers round(y): the reconstruction is unchanged, so
the rate difference is the whole story, and :func:`sequential_params` measures the decode cost.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..util import step_generator
from .entropy import LIKELIHOOD_BOUND, discretized_likelihood
from .layers import lower_bound
from .models import CODEC_SEED_STRIDE, HyperpriorCodec


class MaskedConv2d(nn.Conv2d):
    """k x k convolution that sees only positions before the centre in raster order (mask 'A'). §3.8."""

    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        if k % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {k}")
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones(1, 1, k, k)
        mask[:, :, k // 2, k // 2:] = 0
        mask[:, :, k // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ContextModel(nn.Module):
    """Entropy parameters (means, scales) from the hyperprior's scales and a causal context. §3.8.

    As in Minnen et al. (2018): a 5x5 masked convolution reads the decoded neighbours, and an
    *entropy parameters* network of 1x1 convolutions mixes that context with the hyperprior's
    output. Here it predicts a mean and a correction of the hyperprior's log-scale; its last layer
    starts at zero, so before training it is exactly the hyperprior, and training can only move
    it to fewer bits.
    """

    def __init__(self, M: int, k: int = 5, scales: bool = True) -> None:
        super().__init__()
        self.M, self.adjust_scales = M, scales
        self.context = MaskedConv2d(M, 2 * M, k)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(3 * M, 2 * M, 1), nn.ReLU(), nn.Conv2d(2 * M, 2 * M, 1), nn.ReLU(), nn.Conv2d(2 * M, 2 * M, 1))
        nn.init.zeros_(self.entropy_parameters[-1].weight)
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    def params(self, hyper_scales: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, H, W) hyper scales, (B, 2M, H, W) context -> (means, scales), each (B, M, H, W)."""
        log_s = torch.log(hyper_scales)
        out = self.entropy_parameters(torch.cat([log_s, ctx], dim=1))
        means, d = out.chunk(2, dim=1)
        if not self.adjust_scales:
            return means, hyper_scales
        return means, lower_bound(torch.exp(log_s + d), 0.11)

    def forward(self, y_hat: torch.Tensor, hyper_scales: torch.Tensor) -> torch.Tensor:
        """Likelihood of the integer latents y_hat (B, M, H, W), all positions in parallel."""
        means, scales = self.params(hyper_scales, self.context(y_hat))
        return lower_bound(discretized_likelihood(y_hat, scales, means), LIKELIHOOD_BOUND)


@torch.no_grad()
def latents(codec: HyperpriorCodec, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rounded latents of a frozen codec: (y_hat, hyper scales, z likelihoods)."""
    out = codec(x, mode="round")
    return out["y_hat"], out["scales"].clamp_min(0.11), out["likelihoods"]["z"]


def fit_context(codec: HyperpriorCodec, steps: int = 150, crops: int = 32, size: int = 256,
                seed: int = 0, lr: float = 2e-3, batch: int = 8, scales: bool = True) -> tuple[ContextModel, list[dict[str, float]]]:
    """Train a :class:`ContextModel` on the frozen codec's latents of photo crops (loop.fit). §3.8."""
    from ..data import random_crops
    from ..loop import LoopConfig, fit

    codec.eval()
    y, s, _ = latents(codec, random_crops(crops, size, seed=seed + 7))
    torch.manual_seed(seed)
    ctx = ContextModel(codec.config.M, scales=scales)

    def batch_fn(step: int):
        g = step_generator(seed, step, CODEC_SEED_STRIDE)
        i = torch.randint(crops, (batch,), generator=g)
        return y[i], s[i]

    def loss_fn(m: ContextModel, b, step: int):
        lik = m(b[0], b[1])
        bpp = -torch.log2(lik).sum() / (b[0].shape[0] * size * size)
        return bpp, {"bpp_y": float(bpp.detach())}

    hist = fit(ctx, loss_fn, batch_fn, LoopConfig(steps=steps, lr=lr, seed=seed, log_every=max(1, steps // 10)),
               desc="context")
    return ctx, hist


@torch.no_grad()
def rate_comparison(codec: HyperpriorCodec, ctx: ContextModel, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean bits per pixel of y (and z) with the hyperprior alone and with the context model."""
    hp, cm, zb = [], [], []
    for x in images:
        y_hat, s, z_lik = latents(codec, x)
        npix = x.shape[2] * x.shape[3]
        hp.append(float(-torch.log2(lower_bound(discretized_likelihood(y_hat, s), LIKELIHOOD_BOUND)).sum()) / npix)
        cm.append(float(-torch.log2(ctx(y_hat, s)).sum()) / npix)
        zb.append(float(-torch.log2(z_lik).sum()) / npix)
    n = len(images)
    return {"bpp_y_hyperprior": sum(hp) / n, "bpp_y_context": sum(cm) / n, "bpp_z": sum(zb) / n}


@torch.no_grad()
def sequential_params(ctx: ContextModel, y_hat: torch.Tensor, hyper_scales: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Decoder's view: visit positions in raster order, each using only decoded neighbours.

    Returns (means, scales, seconds); the result equals the parallel computation.
    """
    B, M, H, W = y_hat.shape
    k = ctx.context.kernel_size[0]
    p = k // 2
    decoded = torch.zeros(B, M, H + 2 * p, W + 2 * p)
    means, scales = torch.zeros_like(y_hat), torch.zeros_like(y_hat)
    w = ctx.context.weight * ctx.context.mask
    t0 = time.perf_counter()
    for i in range(H):
        for j in range(W):
            patch = decoded[:, :, i:i + k, j:j + k]
            c = F.conv2d(patch, w, ctx.context.bias)  # (B, 2M, 1, 1)
            mu, sc = ctx.params(hyper_scales[:, :, i:i + 1, j:j + 1], c)
            means[:, :, i, j], scales[:, :, i, j] = mu[:, :, 0, 0], sc[:, :, 0, 0]
            decoded[:, :, i + p, j + p] = y_hat[:, :, i, j]  # "entropy-decode" this position
    return means, scales, time.perf_counter() - t0


@torch.no_grad()
def parallel_params(ctx: ContextModel, y_hat: torch.Tensor, hyper_scales: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Encoder's view (all of y known): one pass; returns (means, scales, seconds)."""
    t0 = time.perf_counter()
    means, scales = ctx.params(hyper_scales, ctx.context(y_hat))
    return means, scales, time.perf_counter() - t0
