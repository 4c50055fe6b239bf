"""Chapter 4 figures: patch grids, attention maps, cost against N, accuracy against M."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import PALETTE, figure, line_plot


def patch_grid(image: np.ndarray, patch: int, title: str = "") -> Figure:
    """An image (H, W, 3) uint8 with its ViT patch grid drawn over it."""
    img = np.asarray(image)
    if img.ndim != 3:
        raise ValueError(f"patch_grid needs an (H, W, 3) image, got shape {img.shape}")
    fig, axes = figure(1, 1, 3.2, 3.2)
    ax = axes[0, 0]
    ax.imshow(img, interpolation="nearest")
    ax.grid(False)
    h, w = img.shape[:2]
    for k in range(0, max(h, w) + 1, patch):
        ax.axhline(k - 0.5, color="white", lw=0.6, alpha=0.8)
        ax.axvline(k - 0.5, color="white", lw=0.6, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig


def similarity_matrix(sim: np.ndarray, title: str = "cosine similarity, image i vs caption j") -> Figure:
    """A heat map of an (n, n) image-text similarity matrix (matching pairs on the diagonal)."""
    s = np.asarray(sim, dtype=float)
    fig, axes = figure(1, 1, 3.8, 3.2)
    ax = axes[0, 0]
    im = ax.imshow(s, cmap="viridis", interpolation="nearest")
    ax.grid(False)
    ax.set_xlabel("caption j")
    ax.set_ylabel("image i")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def position_similarity(pos: np.ndarray, grid: int, anchors: Sequence[int]) -> Figure:
    """Cosine similarity of chosen patches' 2-D sin-cos codes to every patch, as grid maps."""
    p = np.asarray(pos, dtype=float)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    fig, axes = figure(1, len(anchors), 2.2, 2.2)
    for ax, a in zip(axes[0], anchors):
        ax.imshow((p @ p[a]).reshape(grid, grid), cmap="viridis", interpolation="nearest")
        ax.grid(False)
        ax.plot(a % grid, a // grid, "r+", ms=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"patch {a}", fontsize=9)
    return fig


def attention_maps(weights: np.ndarray, grid: int, image: np.ndarray | None = None, ncols: int = 8,
                   title: str = "") -> Figure:
    """Each latent's attention over patches, (M, N) -> M small grid maps (optionally over the image)."""
    w = np.asarray(weights, dtype=float)
    m = w.shape[0]
    ncols = min(ncols, m)
    nrows = (m + ncols - 1) // ncols
    fig, axes = figure(nrows, ncols, 1.3, 1.3)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < m:
            if image is not None:
                ax.imshow(image, extent=(-0.5, grid - 0.5, grid - 0.5, -0.5))
                ax.imshow(w[i].reshape(grid, grid), cmap="magma", alpha=0.65, interpolation="nearest")
            else:
                ax.imshow(w[i].reshape(grid, grid), cmap="magma", interpolation="nearest")
            ax.set_title(str(i), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def cost_vs_n(rows: Sequence[Mapping[str, float]], measured: bool = True) -> Figure:
    """FLOPs (left) and measured time (right) of full self-attention vs the resampler, against N."""
    ns = [r["N"] for r in rows]
    m = rows[0]["M"]
    fig, axes = figure(1, 2 if measured else 1, 4.2, 3.2)
    line_plot({"self-attention over N": (ns, [r["full_flops"] / 1e6 for r in rows]),
               f"resampler to M={m}": (ns, [r["resampler_flops"] / 1e6 for r in rows])},
              xlabel="N patch tokens", ylabel="MFLOPs per image", title="counted cost", logx=True, logy=True,
              ax=axes[0, 0])
    if measured:
        line_plot({"self-attention over N": (ns, [r["full_ms"] for r in rows]),
                   f"resampler to M={m}": (ns, [r["resampler_ms"] for r in rows])},
                  xlabel="N patch tokens", ylabel="ms per batch (CPU)", title="measured time", logx=True,
                  logy=True, ax=axes[0, 1])
    return fig


def accuracy_vs_budget(rows: Sequence[Mapping[str, float]], curves: Mapping[str, object] | None = None,
                       chance: float | None = None, full: float | None = None) -> Figure:
    """Probe accuracy against M for each compressor, with fitted Q(M) curves when given."""
    fig, axes = figure(1, 1, 5.4, 3.6)
    ax = axes[0, 0]
    kinds = [k for k in dict.fromkeys(r["kind"] for r in rows) if k != "all"]
    for i, kind in enumerate(kinds):
        pts = sorted((r["M"], r["accuracy"]) for r in rows if r["kind"] == kind)
        ms, acc = zip(*pts)
        ax.plot(ms, acc, "o", color=PALETTE[i % len(PALETTE)], label=kind, ms=4)
        if curves and kind in curves:
            grid = np.geomspace(1, max(ms), 100)
            ax.plot(grid, curves[kind](grid), "-", color=PALETTE[i % len(PALETTE)], lw=1.2, alpha=0.8)
    if full is not None:
        ax.axhline(full, color="black", ls="--", lw=1, label="all N patch tokens")
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="majority answer")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("M image tokens")
    ax.set_ylabel("probe accuracy (held-out exhibits)")
    ax.legend(fontsize=7, ncol=2)
    return fig
