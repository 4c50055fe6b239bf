"""Chapter 7 figures: error taxonomy per question type, answer confusion, accuracy with intervals."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import PALETTE, figure, heatmap


def error_heatmap(counts: Mapping[str, Mapping[str, int]], title: str = "wrong answers by cause") -> Figure:
    """Question types (rows) × error categories (columns), cells = number of wrong answers. §7.3."""
    if not counts:
        raise ValueError("error_heatmap needs counts for at least one question type")
    types = list(counts)
    cats = list(next(iter(counts.values())))
    m = np.array([[counts[t].get(c, 0) for c in cats] for t in types], dtype=float)
    return heatmap(m, xlabels=cats, ylabels=types, title=title, fmt="{:.0f}", cmap="Reds", vmin=0)


def confusion_heatmap(refs: Sequence[str], answers: Sequence[str], matrix: np.ndarray, title: str = "") -> Figure:
    """Reference answers (rows) × model answers (columns) for one question type. §7.3."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(refs), len(answers)):
        raise ValueError(f"matrix shape {m.shape} does not match {len(refs)} × {len(answers)} labels")
    fig = heatmap(m, xlabels=answers, ylabels=refs, title=title, fmt="{:.0f}", cmap="Blues", vmin=0)
    ax = fig.axes[0]
    ax.set_xlabel("model answer")
    ax.set_ylabel("reference")
    return fig


def accuracy_intervals(results: Mapping[str, tuple[float, float, float]], xlabel: str = "accuracy (%)",
                       title: str = "") -> Figure:
    """One row per model: accuracy and its (low, high) interval, as ``{name: (acc, low, high)}`` in %. §7.2."""
    if not results:
        raise ValueError("accuracy_intervals needs at least one result")
    fig, axes = figure(1, 1, width=6.0, height=0.5 * len(results) + 1.2)
    ax = axes[0, 0]
    for i, (name, (acc, lo, hi)) in enumerate(results.items()):
        if not lo <= acc <= hi:
            raise ValueError(f"{name}: accuracy {acc} lies outside its interval [{lo}, {hi}]")
        ax.errorbar([acc], [i], xerr=[[acc - lo], [hi - acc]], fmt="o", color=PALETTE[i % len(PALETTE)], capsize=4)
    ax.set_yticks(range(len(results)), list(results))
    ax.set_ylim(-0.6, len(results) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig


def pareto_figure(rows: Sequence[Mapping], title: str = "") -> Figure:
    """Accuracy (with its range over seeds) against time to first token, one point per configuration,
    the Pareto front joined by a line; ``rows`` from :func:`vlmbook.eval.sweeps.accuracy_latency`. §7.4."""
    if not rows:
        raise ValueError("pareto_figure needs at least one row")
    fig, axes = figure(1, 1, width=6.4, height=4.2 + 0.17 * len(rows))
    ax = axes[0, 0]
    # Yellow is too pale on white for a small marker; each point also gets its own marker shape, so
    # that points at the same time to first token stay apart.
    colours = [c for c in PALETTE if c != "#F0E442"] + ["#882255"]
    markers = "osD^vP<X>"
    for i, r in enumerate(rows):
        lo, hi = r["accuracy"] - r["accuracy_min"], r["accuracy_max"] - r["accuracy"]
        colour = colours[i % len(colours)]
        ax.errorbar([r["ttft_ms"]], [r["accuracy"]], yerr=[[lo], [hi]], fmt=markers[i % len(markers)], ms=7,
                    capsize=3, color=colour, mfc=colour if r["pareto"] else "white", mew=1.5, alpha=0.9,
                    label=f"{r['route']} · {r['variant']} ({r['compressor']}, M={r['image_tokens']}, "
                          f"{r['seeds']} seed{'s' * (r['seeds'] > 1)})"
                          f"{'' if r['pareto'] else ', off the front'}")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["ttft_ms"])
    ax.plot([r["ttft_ms"] for r in front], [r["accuracy"] for r in front], color="0.5", lw=1, ls="--", zorder=0,
            label="Pareto front")
    ax.set_xlabel("time to first token (ms, one thread)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=7, frameon=False)
    return fig


def tokenizer_sweep_figure(rows: Sequence[Mapping], title: str = "") -> Figure:
    """Three panels against tokens per image (log scale): reconstruction PSNR, MS-SSIM, and codebook
    usage; ``rows`` from :func:`vlmbook.eval.sweeps.tokenizer_summary` (mean, with ± one standard
    deviation over seeds as bars) or :func:`vlmbook.eval.sweeps.tokenizer_rows` (one seed). §7.4."""
    if not rows:
        raise ValueError("tokenizer_sweep_figure needs at least one row")
    if len({r["tokens_per_image"] for r in rows}) != len(rows):
        raise ValueError("one row per tokens-per-image count: summarise seeds with tokenizer_summary first")
    rows = sorted(rows, key=lambda r: r["tokens_per_image"])
    tokens = [r["tokens_per_image"] for r in rows]
    fig, axes = figure(1, 3, width=2.6, height=2.8)
    panels = (("psnr", "PSNR (dB)", PALETTE[0]), ("ms_ssim", "MS-SSIM (3-px window)", PALETTE[1]),
              ("usage", "codebook usage (share of K)", PALETTE[2]))
    for ax, (key, label, colour) in zip(axes[0], panels):
        ax.errorbar(tokens, [r[key] for r in rows], yerr=[r.get(f"{key}_std", 0.0) for r in rows], fmt="o-",
                    color=colour, ms=5, capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks(tokens, [str(int(t)) for t in tokens])
        ax.minorticks_off()
        ax.set_xlabel("tokens per image")
        ax.set_ylabel(label)
    axes[0, 2].set_ylim(0, 1.05)
    fig.suptitle(title)
    return fig
