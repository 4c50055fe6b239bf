"""Chapter 2 figures: Lloyd/Voronoi pictures, codebook usage, reconstructions, code grids."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from . import PALETTE, figure


def voronoi(points: torch.Tensor, centroids: torch.Tensor, title: str = "", resolution: int = 300) -> Figure:
    """2-D points, Lloyd centroids and their Voronoi cells (each cell shaded by its centroid)."""
    p, c = np.asarray(points, dtype=float), np.asarray(centroids, dtype=float)
    if p.ndim != 2 or p.shape[1] != 2 or c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"voronoi needs (n, 2) points and (k, 2) centroids, got {p.shape}, {c.shape}")
    lo, hi = p.min(0) - 0.3, p.max(0) + 0.3
    xs, ys = np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xs, ys)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    cell = ((grid[:, None, :] - c[None]) ** 2).sum(-1).argmin(1).reshape(resolution, resolution)
    fig, axes = figure(1, 1, 4.6, 4.2)
    ax = axes[0, 0]
    ax.imshow(cell, origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="tab20", alpha=0.35,
              interpolation="nearest", aspect="auto")
    ax.contour(gx, gy, cell, levels=np.arange(len(c)) + 0.5, colors="k", linewidths=0.4)
    ax.scatter(p[:, 0], p[:, 1], s=2, color=PALETTE[0], alpha=0.5, label=f"{len(p)} data points")
    ax.scatter(c[:, 0], c[:, 1], s=40, marker="X", color=PALETTE[3], edgecolor="white", linewidth=0.8,
               label=f"{len(c)} codewords")
    ax.set_xlabel("first coordinate $z_1$")
    ax.set_ylabel("second coordinate $z_2$")
    ax.set_title(title or f"Lloyd codebook, K = {len(c)}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, markerscale=2)
    ax.grid(False)
    return fig


def usage_histogram(codes: Mapping[str, torch.Tensor], codebook_size: int, title: str = "") -> Figure:
    """Per-code usage counts sorted from most to least used, one line per quantiser (log scale)."""
    if not codes:
        raise ValueError("usage_histogram needs at least one set of codes")
    fig, axes = figure(1, 1, 5.2, 3.2)
    ax = axes[0, 0]
    for i, (label, c) in enumerate(codes.items()):
        counts = torch.bincount(c.reshape(-1).long(), minlength=codebook_size).sort(descending=True).values
        used = int((counts > 0).sum())
        ax.plot(np.arange(codebook_size), counts.numpy() + 0.5, color=PALETTE[i % len(PALETTE)],
                label=f"{label}: {used}/{codebook_size} codes used")
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("count (+0.5)")
    ax.set_title(title or "Codebook usage")
    ax.legend(fontsize=8)
    return fig


def reconstructions(originals: torch.Tensor, rows: Mapping[str, torch.Tensor], n: int = 6, size: float = 1.3) -> Figure:
    """A grid: first row the originals, then one row per labelled reconstruction set."""
    if originals.dim() != 4:
        raise ValueError(f"originals must be (B, 3, H, W), got {tuple(originals.shape)}")
    n = min(n, len(originals))
    all_rows = {"original": originals, **rows}
    fig, axes = figure(len(all_rows), n, size, size)
    for r, (label, imgs) in enumerate(all_rows.items()):
        for j in range(n):
            ax = axes[r, j]
            ax.imshow(imgs[j].detach().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    return fig


def code_grid(image: torch.Tensor, codes: torch.Tensor, title: str = "") -> Figure:
    """An image beside its (h, w) grid of integer codes, each cell labelled with its code."""
    if codes.dim() != 2:
        raise ValueError(f"code_grid needs (h, w) codes, got {tuple(codes.shape)}")
    fig, axes = figure(1, 2, 3.2, 3.2)
    axes[0, 0].imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    h, w = codes.shape
    H, W = image.shape[1:]
    for i in range(1, h):
        axes[0, 0].axhline(i * H / h - 0.5, color="white", lw=0.5)
    for j in range(1, w):
        axes[0, 0].axvline(j * W / w - 0.5, color="white", lw=0.5)
    # Pale cells (the colour only tells equal codes apart) so that every number stays readable.
    axes[0, 1].imshow(codes.numpy() % 20, cmap="tab20", vmin=0, vmax=19, alpha=0.45, interpolation="nearest")
    for (i, j), v in np.ndenumerate(codes.numpy()):
        axes[0, 1].text(j, i, str(v), ha="center", va="center", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 0].set_title("image and its patches")
    axes[0, 1].set_title(title or f"{h}×{w} codes")
    return fig


def image_rows(rows: Mapping[str, Sequence[torch.Tensor] | torch.Tensor], size: float = 1.3) -> Figure:
    """Rows of equally many images, each row labelled (samples, inpainting steps…)."""
    if not rows:
        raise ValueError("image_rows needs at least one row")
    n = max(len(v) for v in rows.values())
    fig, axes = figure(len(rows), n, size, size)
    for r, (label, imgs) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if j < len(imgs):
                ax.imshow(imgs[j].detach().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    return fig


def decoding_steps(quality: Mapping[int, float] | Mapping[str, Mapping[int, float]], floor: float,
                   ylabel: str = "Fréchet distance", title: str = "") -> Figure:
    """Sample quality against MaskGIT decoding steps T — one curve ``{T: distance}`` or several
    ``{label: {T: distance}}`` — with the tokenizer's reconstruction floor. §2.8."""
    curves = dict(quality) if quality and all(isinstance(v, Mapping) for v in quality.values()) \
        else {"MaskGIT samples": quality}
    if not curves or not all(curves.values()):
        raise ValueError("decoding_steps needs at least one (steps, distance) point per curve")
    fig, axes = figure(1, 1, 5.2, 3.4)
    ax = axes[0, 0]
    steps = sorted({t for q in curves.values() for t in q})
    for i, (label, q) in enumerate(curves.items()):
        ts = sorted(q)
        ax.plot(ts, [q[t] for t in ts], "o-", color=PALETTE[i % len(PALETTE)], ms=4, label=label)
    ax.axhline(floor, color=PALETTE[3], ls="--", lw=1.2, label="reconstruction floor")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(t) for t in steps])
    ax.minorticks_off()
    ax.set_ylim(0, 1.1 * max(max(v for q in curves.values() for v in q.values()), floor))
    ax.set_xlabel("decoding steps T")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="center left", fontsize=8)
    return fig
