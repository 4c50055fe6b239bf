"""Benchmark ``resample``: what compressing N patch tokens to M costs and what it loses (Chapter 4).

1. Cost: FLOPs (formula, checked against PyTorch's counter) and measured CPU time of one full
   self-attention layer over N tokens against a one-layer Perceiver Resampler to M = 16, across N,
   timed twice: attention written with explicit matmuls, and PyTorch's fused SDPA kernel on both sides.
2. Token budget: the museum probe (frozen ``clip-tiny`` features) across M for every compressor,
   with all N = 64 patch tokens as the reference, the fit Q(M) = a - b / (M + c) and M* for a
   context example.

Headline: FLOPs of full self-attention over N = 256 tokens / resampler to M = 16 (d = 256).
"""
from __future__ import annotations

import time

from ..device import num_threads
from ..resample import (
    KINDS,
    ProbeConfig,
    budget_sweep,
    choose_budget,
    cost_table,
    fit_budget_curve,
    probe_features,
)
from ..resample.budget import valid_budgets
from . import BenchResult


def run(quick: bool = False) -> BenchResult:
    """Cost across N and probe accuracy across M for each compressor (quick: fewer points, steps)."""
    from ..vision import load_clip_tiny

    t0 = time.perf_counter()
    table: dict = {}
    with num_threads(1):  # tiny matrices: one thread is as fast and far steadier on a shared CPU
        ns = [64, 256, 1024] if quick else [64, 128, 256, 512, 1024, 2048]
        rows = cost_table(ns, m=16, d=256, depth=1, heads=8, batch=4, repeats=3 if quick else 7)
        table["cost"] = rows
        at = next(r for r in rows if r["N"] == 256)
        table["N256_M16"] = {k: at[k] for k in ("full_flops", "resampler_flops", "flop_ratio", "full_ms",
                                                "resampler_ms", "time_ratio", "full_sdpa_ms", "resampler_sdpa_ms",
                                                "time_ratio_sdpa")}
        big = rows[-1]  # the largest N: explicit-matmul and SDPA time ratios side by side
        table["largest_N"] = {k: big[k] for k in ("N", "flop_ratio", "time_ratio", "time_ratio_sdpa")}

        encoder = load_clip_tiny()
        pcfg = ProbeConfig.tiny().replace(steps=150, n_train=1500, n_test=300) if quick else ProbeConfig.tiny()
        train = probe_features(encoder, "train", pcfg.n_train)
        test = probe_features(encoder, "test", pcfg.n_test)
        ms = [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32, 64]
        kinds = ["perceiver", "pixel_shuffle", "tome"] if quick else list(KINDS)
        probe = budget_sweep(["all"] + kinds, ms, train, test, pcfg)
        table["probe"] = probe
        full = probe[0]["accuracy"]
        fits = {}
        for kind in kinds:
            pts = [(r["M"], r["accuracy"]) for r in probe if r["kind"] == kind]
            if len(pts) >= 3:
                c = fit_budget_curve([p[0] for p in pts], [p[1] for p in pts])
                allowed = valid_budgets(kind, 64, range(1, 65))
                fits[kind] = {"a": c.a, "b": c.b, "c": c.c, "rmse": c.rmse,
                              "M_star_C512_L96": choose_budget(512, 96, c, 0.01, allowed),
                              "M_star_C128_L96": choose_budget(128, 96, c, 0.01, allowed)}
        table["fits"] = fits
        m16 = {r["kind"]: r["accuracy"] for r in probe if r["M"] == 16 and r["kind"] != "all"}
        table["M16_vs_all_points"] = {k: round(100 * (v - full), 2) for k, v in m16.items()}
        table["probe_config"] = pcfg.to_dict()
    table["seconds"] = round(time.perf_counter() - t0, 1)
    return BenchResult("resample", at["flop_ratio"], "x fewer FLOPs at N=256 M=16", table, fmt="{:.3g}")
