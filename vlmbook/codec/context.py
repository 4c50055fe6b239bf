"""Autoregressive context model: a masked convolution over already-decoded latents (Minnen et al. 2018).

Chapter 3 §3.8. The hyperprior predicts every y element from z alone, so all of y decodes in
one parallel pass. A context model also looks at the neighbours above and to the left that
the decoder already has, which predicts y better (fewer bits) but forces the decoder to visit
the latent grid one position at a time (:func:`sequential_params` measures the cost).

Two ways to train it, both in the chapter: :func:`fit_context` bolts a :class:`ContextModel`
onto a trained, *frozen* hyperprior (same integers round(y), same picture; on these photos it
learns the training photos and saves almost nothing on others), and :class:`ContextCodec` trains
it *jointly* with the transform, as Minnen et al. do (artifacts ``codec-ctx-q<k>``, built
exactly as the mean-scale series ``codec-ms-q<k>`` so the two differ by the context alone).
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hub import PretrainedMixin
from ..util import step_generator
from .entropy import LIKELIHOOD_BOUND, discretized_likelihood, quantize
from .layers import lower_bound
from .models import CODEC_SEED_STRIDE, MS_LAMBDAS, STRIDE, CodecConfig, HyperpriorCodec, TrainSpec, quality_builders


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

    def __init__(self, M: int, k: int = 5, scales: bool = True, means_in: bool = False) -> None:
        super().__init__()
        self.M, self.adjust_scales, self.means_in = M, scales, means_in
        self.context = MaskedConv2d(M, 2 * M, k)
        cin = (4 if means_in else 3) * M  # log-scales (and the hyperprior's means) beside the context
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(cin, 2 * M, 1), nn.ReLU(), nn.Conv2d(2 * M, 2 * M, 1), nn.ReLU(), nn.Conv2d(2 * M, 2 * M, 1))
        nn.init.zeros_(self.entropy_parameters[-1].weight)
        nn.init.zeros_(self.entropy_parameters[-1].bias)

    def params(self, hyper_scales: torch.Tensor, ctx: torch.Tensor, hyper_means: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, H, W) hyper scales (and means, when built with ``means_in``), (B, 2M, H, W) context
        -> (means, scales), each (B, M, H, W)."""
        if self.means_in != (hyper_means is not None):
            raise ValueError("hyper_means must be given exactly when the model was built with means_in=True")
        log_s = torch.log(hyper_scales)
        feats = [log_s, hyper_means, ctx] if hyper_means is not None else [log_s, ctx]
        out = self.entropy_parameters(torch.cat(feats, dim=1))
        means, d = out.chunk(2, dim=1)
        if hyper_means is not None:
            means = hyper_means + means  # a correction of the hyperprior's mean: zero at the start
        if not self.adjust_scales:
            return means, hyper_scales
        return means, lower_bound(torch.exp(log_s + d), 0.11)

    def forward(self, y_hat: torch.Tensor, hyper_scales: torch.Tensor,
                hyper_means: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood of the integer latents y_hat (B, M, H, W), all positions in parallel."""
        means, scales = self.params(hyper_scales, self.context(y_hat), hyper_means)
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
def sequential_params(ctx: ContextModel, y_hat: torch.Tensor, hyper_scales: torch.Tensor,
                      hyper_means: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
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
            hm = None if hyper_means is None else hyper_means[:, :, i:i + 1, j:j + 1]
            mu, sc = ctx.params(hyper_scales[:, :, i:i + 1, j:j + 1], c, hm)
            means[:, :, i, j], scales[:, :, i, j] = mu[:, :, 0, 0], sc[:, :, 0, 0]
            decoded[:, :, i + p, j + p] = y_hat[:, :, i, j]  # "entropy-decode" this position
    return means, scales, time.perf_counter() - t0


@torch.no_grad()
def parallel_params(ctx: ContextModel, y_hat: torch.Tensor, hyper_scales: torch.Tensor,
                    hyper_means: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Encoder's view (all of y known): one pass; returns (means, scales, seconds)."""
    t0 = time.perf_counter()
    means, scales = ctx.params(hyper_scales, ctx.context(y_hat), hyper_means)
    return means, scales, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# The joint model: transform, hyperprior and context trained together (Minnen et al. 2018)
# ---------------------------------------------------------------------------------------
class ContextCodec(nn.Module, PretrainedMixin):
    """A hyperprior codec whose y likelihoods come from a :class:`ContextModel`, trained end to end.
    x (B, 3, H, W) -> the same output dict as :class:`HyperpriorCodec`. Chapter 3 §3.8.

    Minnen et al. (2018) train the analysis transform *with* the context model, so that g_a learns
    to leave in y the local structure the context can predict. The codec is
    ``codec`` (a :class:`HyperpriorCodec`, usually ``meanscale``) plus ``context_model``; with its
    last layer at zero it starts as exactly that hyperprior. y is coded as the integers round(y)
    (the context reads them), so rates here are estimates from the likelihoods: the sequential
    range coding of a context model is what :func:`sequential_params` times, not written as files.
    """

    config_class = CodecConfig

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.codec = HyperpriorCodec(config)
        self.context_model = ContextModel(config.M, means_in=config.model == "meanscale")

    @classmethod
    def from_codec(cls, codec: HyperpriorCodec) -> "ContextCodec":
        """Wrap a trained hyperprior: its weights, and a context model that starts as a no-op."""
        model = cls(codec.config)
        model.codec.load_state_dict(codec.state_dict())
        return model

    def hyper(self, y: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(B, M, h, w) y -> (z_hat, hyper scales bounded below, hyper means or None, z likelihoods)."""
        c = self.codec
        z = c.h_a(y.abs() if self.config.model == "hyperprior" else y)
        z_hat, z_lik = c.entropy_bottleneck(z, mode)
        scales, means = c.hyper_params(z_hat)
        return z_hat, lower_bound(scales, c.gaussian_conditional.scale_bound), means, z_lik

    def forward(self, x: torch.Tensor, mode: str = "noise") -> dict[str, Any]:
        """Returns x_hat, y, y_hat, z_hat, scales, means and the likelihoods of y and z."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise ValueError(f"expected (B, 3, H, W) with H, W multiples of {STRIDE}, got {tuple(x.shape)}")
        if mode not in ("noise", "round"):
            raise ValueError(f"mode must be 'noise' or 'round', got {mode!r}")
        y = self.codec.g_a(x)
        z_hat, hs, hm, z_lik = self.hyper(y, mode)
        y_hat = quantize(y, mode)  # the integers round(y) at test time: what the context reads
        means, scales = self.context_model.params(hs, self.context_model.context(y_hat), hm)
        lik = discretized_likelihood(y_hat, scales, means, self.config.family)
        return {"x_hat": self.codec.g_s(y_hat), "y": y, "y_hat": y_hat, "z_hat": z_hat, "scales": scales,
                "means": means, "likelihoods": {"y": lower_bound(lik, LIKELIHOOD_BOUND), "z": z_lik}}

    def aux_loss(self) -> torch.Tensor:
        """The entropy bottleneck's quantile loss."""
        return self.codec.aux_loss()


@torch.no_grad()
def estimated_point(model: nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """Mean estimated bpp (y + z, from the likelihoods) and PSNR of round(y)'s reconstruction over
    (1, 3, H, W) images, for any model with the codec output dict. §3.8."""
    from ..rd.metrics import psnr

    model.eval()
    b, p, by = [], [], []
    for x in images:
        out = model(x, mode="round")
        npix = x.shape[2] * x.shape[3]
        by.append(float(-torch.log2(out["likelihoods"]["y"]).sum()) / npix)
        b.append(by[-1] + float(-torch.log2(out["likelihoods"]["z"]).sum()) / npix)
        p.append(psnr(out["x_hat"].clamp(0, 1), x))
    n = len(images)
    return {"bpp": sum(b) / n, "bpp_y": sum(by) / n, "psnr": sum(p) / n}


def build_ctx(quality: int, seed: int = 0, spec: TrainSpec | None = None,
              base: HyperpriorCodec | None = None) -> ContextCodec:
    """Artifact ``codec-ctx-q<k>``: ``codec-ms-base`` with a context model, trained jointly at
    ``MS_LAMBDAS[quality - 1]`` exactly as ``codec-ms-q<k>`` is trained without one (same start,
    steps, crops and seed), so the two series differ only by the context. §3.8."""
    from .models import _train_one_thread, ms_spec

    if not 1 <= quality <= len(MS_LAMBDAS):
        raise ValueError(f"quality must lie in [1, {len(MS_LAMBDAS)}], got {quality}")
    if base is None:
        from ..hub import load_artifact

        base = load_artifact("codec-ms-base", HyperpriorCodec)
    torch.manual_seed(seed)
    lmbda = MS_LAMBDAS[quality - 1]
    model = ContextCodec.from_codec(base)
    model.config = model.config.replace(lmbda=lmbda)
    model.codec.config = model.config
    _train_one_thread(model, lmbda, spec or ms_spec("q", seed), f"codec-ctx-q{quality}")
    model.codec.update()
    return model


quality_builders(globals(), build_ctx, "ctx")
