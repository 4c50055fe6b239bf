"""Figures for Chapter 3 (learned codecs), built on :mod:`vlmbook.plot` primitives."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import PALETTE, figure, image_grid

__all__ = ["rd_figure", "likelihood_figure", "latent_figure", "bars_figure", "image_grid"]


def rd_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = "",
              zoom: Sequence[str] | None = None) -> Figure:
    """PSNR (dB) against bits per pixel, one line per codec (Chapter 3 §3.9).

    With ``zoom`` (names of curves), a second panel below magnifies the range those curves cover, so
    that curves lying on top of each other in the full view can be told apart; every curve has
    its own colour, marker and line style, and the legend sits below the panels, off the data.
    """
    names = list(curves)
    styles = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1))]
    marks = ["o", "s", "^", "D", "v", "P"]
    # panels stacked, not side by side: each keeps the text column's width and legible labels
    fig, axes = figure(2 if zoom else 1, 1, 5.4, 3.0 if zoom else 3.6)
    for k, ax in enumerate(axes.flat):
        for i, name in enumerate(names):
            x, y = curves[name]
            ax.plot(x, y, linestyle=styles[i % len(styles)], marker=marks[i % len(marks)], ms=4, lw=1.5,
                    color=PALETTE[i % len(PALETTE)], label=name, markerfacecolor="none" if i % 2 else None)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR (dB)")
        if k == 0 and title:
            ax.set_title(title)
    if zoom:
        xs = np.concatenate([np.asarray(curves[n][0], float) for n in zoom])
        ys = np.concatenate([np.asarray(curves[n][1], float) for n in zoom])
        ax = axes[1, 0]
        dx, dy = 0.05 * (xs.max() - xs.min()), 0.08 * (ys.max() - ys.min())
        ax.set_xlim(xs.min() - dx, xs.max() + dx)
        ax.set_ylim(ys.min() - dy, ys.max() + 3 * dy)
        ax.set_title("zoom on " + ", ".join(zoom) if len(zoom) < 3 else "zoom on our codecs' range")
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        axes[0, 0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="0.4", lw=1, zorder=0))
        axes[0, 0].annotate("zoomed below", (x1, y0), xytext=(4, 2), textcoords="offset points", fontsize=8,
                            color="0.3", va="bottom")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=min(3, len(names)),
               fontsize=8)
    return fig


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
    """Image, the most energetic latent channel (C, h, w), its predicted scales, the reconstruction. §3.4."""
    c = int(np.argmax((y ** 2).mean(axis=(1, 2))))
    fig, axes = figure(2, 2, 2.7, 2.7)  # a 2 x 2 grid keeps the panels large in the text column
    for ax, im, t in ((axes[0, 0], image, "photo"), (axes[1, 1], recon, "decoded")):
        ax.imshow(np.clip(im, 0, 1) if np.asarray(im).dtype != np.uint8 else im)
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    h, w = y[c].shape
    lim = float(np.abs(y[c]).max())
    for ax, a, t, cmap, lo in ((axes[0, 1], y[c], f"latent y, channel {c}", "RdBu_r", -lim),
                               (axes[1, 0], scales[c], f"predicted scale, channel {c}", "viridis", 0.0)):
        shown = ax.imshow(a, cmap=cmap, vmin=lo, vmax=lim if lo < 0 else float(a.max()), interpolation="nearest")
        ax.set_title(t, fontsize=9)
        ax.set_xticks([0, w - 1])
        ax.set_yticks([0, h - 1])
        ax.tick_params(labelsize=8)
        ax.grid(False)
        fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=8)
    return fig


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
