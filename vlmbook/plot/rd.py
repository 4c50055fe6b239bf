"""Figures for Chapter 1 (rate–distortion)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import PALETTE, figure


def rd_theory(distortions: np.ndarray, closed_form: np.ndarray, ba: tuple[np.ndarray, np.ndarray],
              ecsq: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Gaussian R(D): the closed form, Blahut–Arimoto points and entropy-coded quantisation."""
    fig, axes = figure(1, 1, 5.2, 3.6)
    ax = axes[0, 0]
    ax.plot(distortions, closed_form, label="R(D) = ½ log₂(σ²/D)", color=PALETTE[0])
    ax.plot(ba[1], ba[0], "o", ms=5, label="Blahut–Arimoto (discretised source)", color=PALETTE[1])
    if ecsq is not None:
        ax.plot(ecsq[1], ecsq[0], "s--", ms=4, label="uniform quantiser + entropy coding", color=PALETTE[3])
    ax.set_xscale("log")
    ax.set_xlabel("distortion D (MSE, σ² = 1)")
    ax.set_ylabel("rate R (bits / sample)")
    ax.legend(fontsize=8)
    return fig


def quantizer_staircase(x: np.ndarray, curves: Mapping[str, np.ndarray], pdf: np.ndarray | None = None) -> Figure:
    """Input–output staircases of several quantisers over a Gaussian density."""
    fig, axes = figure(1, 1, 5.2, 3.6)
    ax = axes[0, 0]
    for i, (name, y) in enumerate(curves.items()):
        ax.step(x, y, where="mid", label=name, color=PALETTE[i])
    if pdf is not None:
        ax2 = ax.twinx()
        ax2.fill_between(x, pdf, alpha=0.12, color="grey", label="source density (scaled)")
        ax2.set_yticks([])
        ax2.grid(False)
        ax2.set_ylim(0, pdf.max() * 1.05)
    ax.set_xlabel("input x")
    ax.set_ylabel("quantised q(x)")
    handles, labels = ax.get_legend_handles_labels()
    if pdf is not None:
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    return fig


def lagrangian(rates: np.ndarray, dists: np.ndarray, hull: np.ndarray, lambdas: Sequence[float],
               chosen: Sequence[int]) -> Figure:
    """Operating points, their lower convex hull, and the lines R + λD = J* for several λ."""
    fig, axes = figure(1, 1, 5.2, 3.8)
    ax = axes[0, 0]
    ax.plot(rates, dists, "o", ms=4, color="grey", alpha=0.6, label="operating points")
    ax.plot(rates[hull], dists[hull], "-", color=PALETTE[0], label="lower convex hull")
    r = np.linspace(rates.min(), rates.max(), 50)
    for i, (lam, k) in enumerate(zip(lambdas, chosen)):
        j = rates[k] + lam * dists[k]
        c = PALETTE[(i + 1) % len(PALETTE)]
        ax.plot(r, (j - r) / lam, ":", color=c)
        ax.plot(rates[k], dists[k], "o", ms=8, color=c, mec="black", mew=0.6, zorder=3,
                label=f"λ = {lam:g} picks R = {rates[k]:.2f}")
    ax.set_ylim(0, dists.max() * 1.05)
    ax.set_xlabel("rate R (bits)")
    ax.set_ylabel("distortion D")
    ax.legend(fontsize=7)
    return fig


def codec_rd(curves: Mapping[str, Sequence], metrics: Sequence[str] = ("psnr", "ms_ssim")) -> Figure:
    """bpp against each metric for codecs given as ``name -> [RDPoint, ...]``."""
    labels = {"psnr": "PSNR (dB)", "ms_ssim": "MS-SSIM"}
    fig, axes = figure(1, len(metrics), 4.2, 3.2)
    for ax, m in zip(axes[0], metrics):
        for i, (name, pts) in enumerate(curves.items()):
            ax.plot([p.bpp for p in pts], [getattr(p, m) for p in pts], "o-", ms=4, label=name, color=PALETTE[i])
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(labels.get(m, m))
        ax.legend(fontsize=8)
    return fig


def attention_cost(n: np.ndarray, flops: np.ndarray, seconds: np.ndarray, parts: Mapping[str, np.ndarray]) -> Figure:
    """Left: FLOPs per layer by part against n. Right: measured time against counted FLOPs."""
    fig, axes = figure(1, 2, 4.2, 3.2)
    ax = axes[0, 0]
    for i, (name, v) in enumerate(parts.items()):
        ax.plot(n, v, "o-", ms=3, label=name, color=PALETTE[i])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequence length n = M + L")
    ax.set_ylabel("FLOPs per layer")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(flops, seconds * 1e3, "o", color=PALETTE[3])
    slope = np.sum(flops * seconds) / np.sum(flops * flops)
    ax.plot(flops, slope * flops * 1e3, "-", color="grey", label=f"fit: {1e-9 / slope:.1f} GFLOP/s")
    ax.set_xlabel("counted FLOPs")
    ax.set_ylabel("measured time (ms)")
    ax.legend(fontsize=8)
    return fig
