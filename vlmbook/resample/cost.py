"""What compression buys: exact FLOP counts and measured times, resampler vs full self-attention.

Convention: one multiply-add = 2 FLOPs; layer norms, softmax, biases and GELU are left out
(they are O(n d), small next to the matrix products). For a sequence of n tokens of width d,
one self-attention layer costs

* projections Q, K, V, O: 4 x 2 n d^2 = 8 n d^2,
* scores Q K^T and the weighted sum of values: 2 n^2 d + 2 n^2 d = 4 n^2 d,

and its MLP (width 4d) another 16 n d^2. The Perceiver Resampler's M latents attend to the
n + M keys [features; latents], so the quadratic term becomes 4 M (n + M) d: linear in n.
Chapter 4 §4.4; the per-layer formulas live in :mod:`vlmbook.rd.budget` (the one FLOP module);
:func:`count_flops` checks every formula against PyTorch's FLOP counter.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..rd.budget import _check, attention_flops, ffn_flops, self_attention_layer_flops
from ..util import median_seconds


def perceiver_flops(n: int, m: int, d: int, depth: int = 1, ff_mult: int = 4, in_dim: int | None = None,
                    out_dim: int | None = None) -> int:
    """Perceiver Resampler: depth x (cross-attention of m latents over n + m keys + MLP). O(n m). §4.4.

    ``in_dim``/``out_dim`` add the input and output projections when they are not the identity.
    """
    _check(depth=depth)
    layer = attention_flops(m, n + m, d) + ffn_flops(m, d, ff_mult)
    extra = (2 * n * in_dim * d if in_dim and in_dim != d else 0) + (2 * m * d * out_dim if out_dim else 0)
    return depth * layer + extra


def qformer_flops(n: int, m: int, d: int, depth: int = 1, ff_mult: int = 4, in_dim: int | None = None,
                  out_dim: int | None = None) -> int:
    """Q-Former: depth x (self-attention of m queries + cross-attention over n features + MLP). §4.4."""
    _check(depth=depth)
    layer = attention_flops(m, m, d) + attention_flops(m, n, d, in_dim or d) + ffn_flops(m, d, ff_mult)
    return depth * layer + (2 * m * d * out_dim if out_dim else 0)


def count_flops(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """FLOPs of one forward pass as counted by ``torch.utils.flop_counter`` (matmuls only)."""
    with FlopCounterMode(display=False) as counter:
        module(*inputs, **kwargs)
    return int(counter.get_total_flops())


def time_forward(module: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``module(x)`` under ``no_grad`` (timings vary by machine)."""
    with torch.no_grad():
        return median_seconds(lambda: module(x), repeats, warmup)


def fused_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose every :class:`Attention` uses PyTorch's fused SDPA kernel. §4.4."""
    from .layers import Attention

    out = copy.deepcopy(module)
    for mod in out.modules():
        if isinstance(mod, Attention):
            mod.fused = True
    return out


def cost_table(ns: list[int], m: int = 16, d: int = 256, depth: int = 1, heads: int = 8, batch: int = 4,
               measure: bool = True, repeats: int = 5, seed: int = 0) -> list[dict[str, float]]:
    """Per N: FLOPs (formula and counted) and times of ``depth`` full self-attention layers over N
    tokens against a ``depth``-layer Perceiver Resampler to M latents, at width d. §4.4."""
    from .compressors import CompressorConfig, PerceiverResampler
    from .layers import Block

    _check(m=m, d=d, depth=depth, batch=batch)
    torch.manual_seed(seed)
    full = nn.Sequential(*[Block(d, heads) for _ in range(depth)]).eval()
    res = PerceiverResampler(CompressorConfig(in_dim=d, dim=d, out_dim=d, num_tokens=m, depth=depth,
                                              heads=heads)).eval()
    full_sdpa, res_sdpa = fused_copy(full), fused_copy(res)
    rows = []
    for n in ns:
        _check(n=n)
        x = torch.randn(batch, n, d)
        row: dict[str, float] = {
            "N": n, "M": m, "d": d,
            "full_flops": depth * self_attention_layer_flops(n, d),
            "resampler_flops": perceiver_flops(n, m, d, depth, out_dim=d),
        }
        row["full_flops_counted"] = count_flops(full, x[:1])
        row["resampler_flops_counted"] = count_flops(res, x[:1])
        row["flop_ratio"] = row["full_flops"] / row["resampler_flops"]
        if measure:
            row["full_ms"] = 1e3 * time_forward(full, x, repeats)
            row["resampler_ms"] = 1e3 * time_forward(res, x, repeats)
            row["time_ratio"] = row["full_ms"] / row["resampler_ms"]
            # the same two layers with PyTorch's fused attention kernel (SDPA) on both sides
            row["full_sdpa_ms"] = 1e3 * time_forward(full_sdpa, x, repeats)
            row["resampler_sdpa_ms"] = 1e3 * time_forward(res_sdpa, x, repeats)
            row["time_ratio_sdpa"] = row["full_sdpa_ms"] / row["resampler_sdpa_ms"]
        rows.append(row)
    return rows
