"""Sweeps across the book's systems: accuracy against latency for every route and compressor (Chapter 7 §7.4).

Accuracy comes from the committed ablation records (Chapter 5, several seeds each); latency is
measured live on a model of the same configuration, since time to first token depends on the
architecture and the sequence, not on the trained weights. The Pareto front keeps the
configurations that no other one beats on both axes.
"""
from __future__ import annotations

from typing import Sequence

import torch


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency, higher accuracy),
    sorted by latency. A point with equal latency and accuracy to another is kept once (the first). §7.4."""
    if len(latency) != len(accuracy):
        raise ValueError(f"latency has {len(latency)} points but accuracy has {len(accuracy)}")
    if any(x != x for x in [*latency, *accuracy]):
        raise ValueError("latency and accuracy must not hold NaN")
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -accuracy[i], i))
    front, best = [], float("-inf")
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


@torch.no_grad()
def accuracy_latency(records: Sequence[dict], repeats: int = 5, question: str = "What colour is the star?") -> list[dict]:
    """One row per (source, route, variant) of the ablation: accuracy over seeds, image tokens, and the
    time to first token (ms) and decoding speed (tokens/s) of that configuration, measured on one
    thread on a 64-px exhibit, plus ``pareto`` (on the front or not). §7.4."""
    from ..bench.vlm import from_images, latency, summarise
    from ..data.museum import Museum
    from ..device import num_threads
    from ..fusion.ablation import variant_config
    from ..fusion.model import VisionLanguageModel

    # the ablation's own grouping (source/route/variant/steps) and statistics over seeds
    groups = from_images(summarise(records))
    rows, timed = [], {}
    with num_threads(1):
        for key, g in groups.items():
            source, route, variant, _ = key.split("/")
            cfg = variant_config(variant, route, source)
            arch = repr(sorted(cfg.to_dict().items()))
            if arch not in timed:  # variants that differ only in how they were trained share one model
                vlm = VisionLanguageModel(cfg).eval()
                image = Museum("test", size=cfg.image_size).tensors(0, 1)[0]
                timed[arch] = latency(vlm, image, question, repeats=repeats)
            acc = g["all"]
            rows.append({"source": source, "route": route, "variant": variant, "compressor": cfg.compressor,
                         "image_tokens": cfg.image_tokens, "seeds": len(g["seeds"]), "accuracy": acc["mean"],
                         "accuracy_min": acc["min"], "accuracy_max": acc["max"], **timed[arch], "threads": 1})
    front = set(pareto_front([r["ttft_ms"] for r in rows], [r["accuracy"] for r in rows]))
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows
