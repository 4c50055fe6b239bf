"""One figure style for the whole book, and the primitives every chapter's figures use.

Figures are built with Matplotlib's object API (never pyplot's global state), so nothing is
shown behind the reader's back; :func:`show` displays a figure as a PNG and closes it, which
leaves no ``<Figure size ...>`` text in notebook outputs. Chapter-specific figures live in
``vlmbook.plot.<chapter>`` modules built on these primitives.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: The book's palette (colour-blind-safe, Okabe–Ito order).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "image.cmap": "viridis",
}


def figure(nrows: int = 1, ncols: int = 1, width: float = 5.0, height: float = 3.4,
           **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A new styled figure of ``nrows × ncols`` panels; returns ``(fig, axes_array)``."""
    if nrows < 1 or ncols < 1:
        raise ValueError(f"figure needs nrows, ncols >= 1, got {nrows}, {ncols}")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, subplot_kw=subplot_kw or None)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="png")
    return buf.getvalue()


def show(fig: Figure, path: str | Path | None = None) -> None:
    """Display ``fig`` as a PNG in Jupyter (only an image, no text repr); optionally save it."""
    png = to_png(fig)
    if path is not None:
        Path(path).write_bytes(png)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: nothing to display
        return
    if get_ipython() is not None:
        display({"image/png": base64.b64encode(png).decode("ascii")}, raw=True)


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str = "",
              ylabel: str = "", title: str = "", logx: bool = False, logy: bool = False,
              markers: bool = True, ax: Axes | None = None) -> Figure:
    """One line per ``label -> (x, y)``; returns the figure."""
    fig, ax = _fig_ax(ax)
    for i, (label, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, marker="o" if markers else None, ms=3.5, label=label, color=PALETTE[i % len(PALETTE)])
    _decorate(ax, xlabel, ylabel, title, logx, logy, legend=len(series) > 1)
    return fig


def image_grid(images: Sequence[np.ndarray] | np.ndarray, titles: Sequence[str] | None = None,
               ncols: int = 6, size: float = 1.6, cmap: str | None = None) -> Figure:
    """Show images (H, W[, C] arrays in [0, 1] or uint8, or (C, H, W) tensors) in a grid."""
    images = [_as_hwc(im) for im in images]
    if not images:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, len(images))
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = figure(nrows, ncols, width=size, height=size + (0.25 if titles else 0))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            im = images[i]
            ax.imshow(im, cmap=cmap or ("gray" if im.ndim == 2 else None), vmin=0, vmax=1 if im.dtype != np.uint8 else 255,
                      interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    return fig


def heatmap(matrix: np.ndarray, xlabels: Sequence[str] | None = None, ylabels: Sequence[str] | None = None,
            title: str = "", fmt: str | None = "{:.2f}", cmap: str = "viridis", ax: Axes | None = None,
            vmin: float | None = None, vmax: float | None = None) -> Figure:
    """A labelled heat map of a 2-D array, with values written in the cells when small."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {m.shape}")
    fig, ax = _fig_ax(ax, width=max(3.0, 0.45 * m.shape[1] + 1.5), height=max(2.5, 0.4 * m.shape[0] + 1.0))
    im = ax.imshow(m, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.grid(False)
    if xlabels is not None:
        ax.set_xticks(range(m.shape[1]), list(xlabels), rotation=45, ha="right")
    if ylabels is not None:
        ax.set_yticks(range(m.shape[0]), list(ylabels))
    if fmt and m.size <= 400:
        for (i, j), v in np.ndenumerate(m):
            # Dark text on light cells and light text on dark ones, whatever the colour map's direction.
            r, g, b, _ = im.cmap(im.norm(v))
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return fig


def _as_hwc(im) -> np.ndarray:
    a = im.detach().cpu().float().numpy() if hasattr(im, "detach") else np.asarray(im)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = np.clip(a, 0.0, 1.0)
    return a


def _fig_ax(ax: Axes | None, width: float = 5.0, height: float = 3.4) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, axes = figure(1, 1, width, height)
    return fig, axes[0, 0]


def _decorate(ax: Axes, xlabel: str, ylabel: str, title: str, logx: bool, logy: bool, legend: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if legend:
        ax.legend(fontsize=8)
