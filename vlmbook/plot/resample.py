"""Chapter 4 figures: patch grids, attention maps, cost against N, accuracy against M."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.ticker
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
    fig, axes = figure(1, len(anchors), 2.3, 2.4)
    ticks = list(range(0, grid, max(1, grid // 4)))
    sims = p @ p[list(anchors)].T  # one colour scale for the three panels
    for k, (ax, a) in enumerate(zip(axes[0], anchors)):
        im = ax.imshow(sims[:, k].reshape(grid, grid), cmap="viridis", vmin=sims.min(), vmax=sims.max(),
                       interpolation="nearest")
        ax.grid(False)
        ax.plot(a % grid, a // grid, marker="+", color="red", ms=10, mew=2)
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("patch column", fontsize=8)
        if k == 0:
            ax.set_ylabel("patch row", fontsize=8)
        ax.set_title(f"patch {a} (row {a // grid}, col {a % grid})", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.85, label="cosine similarity")
    return fig


def attention_maps(weights: np.ndarray, grid: int, image: np.ndarray | None = None, ncols: int = 8,
                   title: str = "") -> Figure:
    """Each latent's attention over patches, (M, N) -> M small grid maps (optionally over the image)."""
    w = np.asarray(weights, dtype=float)
    m = w.shape[0]
    ncols = min(ncols, m)
    nrows = (m + ncols - 1) // ncols
    fig, axes = figure(nrows, ncols, 1.3, 1.35)
    vmax = float(w.max())  # one colour scale for every latent, so the panels can be compared
    im = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < m:
            if image is not None:
                ax.imshow(image, extent=(-0.5, grid - 0.5, grid - 0.5, -0.5))
                im = ax.imshow(w[i].reshape(grid, grid), cmap="magma", alpha=0.65, vmin=0, vmax=vmax,
                               interpolation="nearest")
            else:
                im = ax.imshow(w[i].reshape(grid, grid), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"latent {i}", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=list(axes.flat), shrink=0.8, label="attention weight")
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
    for ax in axes[0]:
        _int_ticks(ax, ns)
    return fig


def _int_ticks(ax, values: Sequence[float]) -> None:
    """Label a log x axis at the measured values themselves (64, 128, …) instead of powers of ten."""
    ax.set_xticks(list(values), [f"{v:g}" for v in values])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def training_loss(steps: Sequence[int], losses: Sequence[float], chance: float | None = None,
                  chance_label: str = "chance", title: str = "") -> Figure:
    """A training-loss curve against the step, with the loss of guessing uniformly as a dashed line. §4.1."""
    if len(steps) != len(losses) or not steps:
        raise ValueError(f"training_loss needs as many steps as losses (got {len(steps)} and {len(losses)})")
    fig, axes = figure(1, 1, 5.0, 3.2)
    ax = axes[0, 0]
    ax.plot(steps, losses, "o-", ms=3.5, color=PALETTE[0], label="InfoNCE loss")
    if chance is not None:
        ax.axhline(chance, color="0.35", ls="--", lw=1.2, label=chance_label)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def probe_training_curves(steps: Sequence[int], curves: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Probe accuracy against training steps, one line per probe, steps on a log axis. §4.6."""
    if not curves:
        raise ValueError("probe_training_curves needs at least one curve")
    fig = line_plot({k: (list(steps), list(v)) for k, v in curves.items()}, xlabel="probe training steps",
                    ylabel="probe accuracy (held-out)", title=title, logx=True)
    _int_ticks(fig.axes[0], steps)
    return fig


def accuracy_vs_budget(rows: Sequence[Mapping[str, float]], curves: Mapping[str, object] | None = None,
                       chance: float | None = None, full: float | None = None,
                       ylabel: str = "probe accuracy (held-out exhibits)", full_label: str = "all N patch tokens"
                       ) -> Figure:
    """Accuracy against M for each ``kind`` (a compressor, or a route of the guide), with fitted Q(M)
    curves when given and a dashed reference line at ``full``."""
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
        ax.axhline(full, color="black", ls="--", lw=1, label=full_label)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="majority answer")
    ax.set_xscale("log", base=2)
    top = max(r["M"] for r in rows)
    _int_ticks(ax, [2 ** k for k in range(int(np.log2(top)) + 1)])
    ax.set_xlabel("M image tokens")
    ax.set_ylabel(ylabel)
    # Below the axes: inside, the legend would cover the baseline lines.
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig
