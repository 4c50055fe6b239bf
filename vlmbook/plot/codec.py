"""Figures for Chapter 3 (learned codecs), built on :mod:`vlmbook.plot` primitives."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import PALETTE, figure, image_grid, line_plot

__all__ = ["rd_figure", "likelihood_figure", "latent_figure", "bars_figure", "image_grid"]


def rd_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "") -> Figure:
    """PSNR (dB) against bits per pixel, one line per codec."""
    return line_plot(curves, xlabel="bits per pixel", ylabel="PSNR (dB)", title=title)


def likelihood_figure(scale: float = 1.0, span: int = 6) -> Figure:
    """Bin probabilities of the three families at one scale (Chapter 3 §3.3)."""
    import torch

    from ..codec.entropy import FAMILIES, discretized_likelihood

    k = torch.arange(-span, span + 1, dtype=torch.float64)
    fig, axes = figure(1, 1, 5.0, 3.0)
    ax = axes[0, 0]
    for i, fam in enumerate(FAMILIES):
        p = discretized_likelihood(k, torch.full_like(k, scale), None, fam).numpy()
        ax.plot(k.numpy() + (i - 1) * 0.2, p, "o", ms=4, color=PALETTE[i], label=fam)
        ax.vlines(k.numpy() + (i - 1) * 0.2, 0, p, color=PALETTE[i], lw=1)
    ax.set_xlabel("integer value of y (mean 0)")
    ax.set_ylabel("P(bin)")
    ax.set_title(f"discretised likelihoods, scale {scale}")
    ax.legend(fontsize=8)
    return fig


def latent_figure(image: np.ndarray, y: np.ndarray, scales: np.ndarray, recon: np.ndarray) -> Figure:
    """Image, the most energetic latent channel, its predicted scales, and the reconstruction."""
    c = int(np.argmax((y ** 2).mean(axis=(1, 2))))
    norm = lambda a: (a - a.min()) / (a.max() - a.min() + 1e-9)  # noqa: E731
    return image_grid([image, norm(y[c]), norm(scales[c]), recon],
                      titles=["photo", f"y channel {c}", "hyperprior scale", "decoded"], ncols=4, size=2.0)


def bars_figure(values: Mapping[str, float], ylabel: str, title: str = "", log: bool = False) -> Figure:
    """A labelled bar chart."""
    fig, axes = figure(1, 1, 5.0, 3.0)
    ax = axes[0, 0]
    names = list(values)
    ax.bar(names, [values[n] for n in names], color=[PALETTE[i % len(PALETTE)] for i in range(len(names))])
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    for i, n in enumerate(names):
        ax.text(i, values[n], f"{values[n]:.3g}", ha="center", va="bottom", fontsize=8)
    return fig
