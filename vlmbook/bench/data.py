"""Benchmark ``data``: museum samples per second at 64 px on CPU (target >= 5,000 on a quiet 2-core machine).

The load average (1, 5, 15 min) is recorded before and after: on a shared machine the figure
falls roughly in proportion to the load, so compare runs only at similar load.
"""
from __future__ import annotations

import os
import time

from ..data.museum import Museum, caption, generate_scene, questions, render
from . import BenchResult


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> BenchResult:
    """Samples/s for full samples (scene + image + caption + questions) and for each part."""
    n = 3000 if quick else 20000
    table: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    for size in (32, 64, 128, 256):
        m = Museum("train", size=size, length=n + 500)
        for i in range(200):  # warm the sprite and wall caches, as a training loop would
            m[i]
        k = n if size <= 64 else n // 4
        table[f"{size}px"] = {"samples_per_s": round(_rate(lambda i: m[i + 200], k), 1)}
    table["parts_64px"] = {
        "scene_per_s": round(_rate(lambda i: generate_scene("train", i), n), 1),
        "render_per_s": round(_rate(lambda i, s=[generate_scene("train", j) for j in range(500)]: render(s[i % 500], 64), n), 1),
        "caption_and_questions_per_s": round(_rate(lambda i, s=[generate_scene("train", j) for j in range(500)]:
                                                   (caption(s[i % 500]), questions(s[i % 500])), n), 1),
    }
    table["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return BenchResult("data", table["64px"]["samples_per_s"], "samples/s", table, fmt="{:.0f}")
