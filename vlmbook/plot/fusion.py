"""Chapter 5 figures: attention masks, accuracy per question type, cited patches, fusion cost."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import PALETTE, figure, line_plot


def masks_figure(masks: Mapping[str, torch.Tensor], labels: Sequence[str] | None = None) -> Figure:
    """One panel per (T, S) bool mask: dark = may attend; rows are queries, columns keys. §5.4."""
    if not masks:
        raise ValueError("masks_figure needs at least one mask")
    ncols = min(2, len(masks))  # two panels a row: legible at the width of the text column
    fig, axes = figure((len(masks) + ncols - 1) // ncols, ncols, width=3.0, height=3.2)
    # square panels: the "compressed" engine sizes fixed-aspect axes so that titles and tick
    # labels stay inside the figure (the constrained engine clipped them)
    fig.set_layout_engine("compressed")
    for ax in axes.flat[len(masks):]:
        ax.axis("off")
    for ax, (title, m) in zip(axes.flat, masks.items()):
        a = np.asarray(m, dtype=float)
        ax.imshow(a, cmap="Greys", vmin=0, vmax=1.3, interpolation="nearest")
        ax.grid(False)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key", fontsize=9)
        ax.set_ylabel("query", fontsize=9)
        if labels is not None and len(labels) == a.shape[1] and a.shape[1] <= 24:
            ax.set_xticks(range(a.shape[1]), list(labels), rotation=90, fontsize=7)
            if a.shape[0] == a.shape[1]:
                ax.set_yticks(range(a.shape[0]), list(labels), fontsize=7)
        else:  # no names for these positions: number them
            ax.set_xticks(range(a.shape[1]), [str(i) for i in range(a.shape[1])], fontsize=7)
            ax.set_yticks(range(a.shape[0]), [str(i) for i in range(a.shape[0])], fontsize=7)
    return fig


def accuracy_bars(results: Mapping[str, Mapping[str, float]], types: Sequence[str], title: str = "") -> Figure:
    """Grouped bars: held-out accuracy (%) per question type for each route."""
    fig, axes = figure(1, 1, width=7.0, height=3.6)
    ax = axes[0, 0]
    n = len(results)
    w = 0.8 / max(n, 1)
    x = np.arange(len(types))
    colours = [c for c in PALETTE if c != "#F0E442"]  # yellow bars are hard to see on white
    for i, (route, acc) in enumerate(results.items()):
        ax.bar(x + (i - (n - 1) / 2) * w, [acc.get(t, np.nan) for t in types], w, label=route,
               color=colours[i % len(colours)])
    ax.set_xticks(x, list(types), rotation=30)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    # below the axes, so that the legend never covers a bar
    ax.legend(fontsize=8, ncols=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.28))
    if title:
        ax.set_title(title)
    return fig


def citations_figure(image: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                     truth: Sequence[tuple[int, int, int, int]] = (), title: str = "") -> Figure:
    """An image with cited patch boxes (solid) and ground-truth supporting patches (dashed)."""
    fig, axes = figure(1, 1, width=3.2, height=3.2)
    ax = axes[0, 0]
    ax.imshow(image, interpolation="nearest")
    ax.grid(False)
    ax.axis("off")
    for (x0, y0, x1, y1) in boxes:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=PALETTE[3], lw=3))
    # the true patches are drawn last and inset by a pixel, so a right citation shows both boxes
    for (x0, y0, x1, y1) in truth:
        ax.add_patch(Rectangle((x0 + 0.5, y0 + 0.5), x1 - x0 - 2, y1 - y0 - 2, fill=False, ec="white", lw=1.5,
                               ls="--"))
    ax.set_title(title, fontsize=9)
    return fig


def cost_figure(Ms: Sequence[int], series: Mapping[str, Sequence[float]], ylabel: str, title: str = "") -> Figure:
    """Cost (FLOPs or seconds) against the number of image tokens M, one line per fusion style."""
    return line_plot({k: (list(Ms), list(v)) for k, v in series.items()}, xlabel="image tokens M", ylabel=ylabel,
                     title=title, logx=True, logy=True)


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """Training loss against step for each route."""
    return line_plot({k: ([r["step"] for r in h], [r["loss"] for r in h]) for k, h in histories.items()},
                     xlabel="step", ylabel="answer loss (nats/token)", logy=True, markers=False)


def accuracy_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], title: str = "") -> Figure:
    """Held-out accuracy (%) against training step, one line per variant (the plateau and the jump). §5.7."""
    if not curves:
        raise ValueError("accuracy_curves needs at least one curve")
    fig, axes = figure(1, 1, width=7.0, height=3.4)
    ax = axes[0, 0]
    colours = [c for c in PALETTE if c != "#F0E442"]
    styles = ["-", "--"]
    for i, (label, (x, y)) in enumerate(curves.items()):
        ax.plot(list(x), list(y), marker="o", ms=3.5, label=label, color=colours[i % len(colours)],
                ls=styles[(i // len(colours)) % 2])
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(0, 100)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes, never over a line
    return fig
