"""Chapter 6 figures: accuracy and citation precision across the training stages, self-consistency by K."""
from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from . import PALETTE, figure


def stages_figure(stages: Mapping[str, Mapping[str, float]], title: str = "") -> Figure:
    """Paired bars per stage: held-out answer accuracy and citation precision (%), from ``evaluate``'s ``'all'`` rows."""
    if not stages:
        raise ValueError("stages_figure needs at least one stage")
    for name, row in stages.items():
        missing = {"accuracy", "citation_precision"} - set(row)
        if missing:
            raise ValueError(f"stage {name!r} lacks {sorted(missing)}")
    fig, axes = figure(1, 1, width=max(4.0, 1.2 * len(stages) + 1.5), height=3.2)
    ax = axes[0, 0]
    x = np.arange(len(stages))
    for j, (key, label) in enumerate((("accuracy", "answer accuracy"), ("citation_precision", "citation precision"))):
        ax.bar(x + (j - 0.5) * 0.38, [row[key] for row in stages.values()], 0.38, label=label, color=PALETTE[j])
    ax.set_xticks(x, list(stages))
    ax.set_ylabel("held-out (%)")
    ax.set_ylim(0, 100)
    # below the axes: bars near 100 % would run under a legend drawn inside them
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8, ncols=2)
    if title:
        ax.set_title(title)
    return fig


def self_consistency_figure(acc_by_k: Mapping[int, float], title: str = "") -> Figure:
    """Accuracy (%) of the majority vote against the number of sampled answers K."""
    if not acc_by_k:
        raise ValueError("self_consistency_figure needs at least one K")
    ks = sorted(int(k) for k in acc_by_k)
    fig, axes = figure(1, 1, width=4.0, height=3.0)
    ax = axes[0, 0]
    ax.plot(ks, [acc_by_k[k] if k in acc_by_k else acc_by_k[str(k)] for k in ks], marker="o", color=PALETTE[0])
    ax.set_xlabel("sampled answers K")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_xticks(ks)
    if title:
        ax.set_title(title)
    return fig
