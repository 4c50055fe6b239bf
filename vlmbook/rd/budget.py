"""The token budget: context-window arithmetic and the cost of attention (Chapter 1 §1.1)."""
from __future__ import annotations

import dataclasses
import time

import torch


def image_token_budget(context: int, text_tokens: int, reserve: int = 0) -> int:
    """M = C − L − reserve: image tokens that fit beside L text tokens (and an answer reserve)."""
    for name, v in (("context", context), ("text_tokens", text_tokens), ("reserve", reserve)):
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    m = context - text_tokens - reserve
    if m < 0:
        raise ValueError(f"text ({text_tokens}) and reserve ({reserve}) exceed the context ({context})")
    return m


def patch_tokens(height: int, width: int, patch: int, merge: int = 1) -> int:
    """Tokens a ViT-style encoder emits: (H/p)(W/p)/merge² (merge = pixel-shuffle factor)."""
    if min(height, width, patch, merge) < 1:
        raise ValueError("height, width, patch and merge must be >= 1")
    if height % patch or width % patch:
        raise ValueError(f"image {height}×{width} is not divisible by the patch size {patch}")
    gh, gw = height // patch, width // patch
    if gh % merge or gw % merge:
        raise ValueError(f"patch grid {gh}×{gw} is not divisible by the merge factor {merge}")
    return gh * gw // (merge * merge)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one transformer layer (1 multiply-add = 2 FLOPs)."""

    projections: int  # Q, K, V and output: 8 n d²
    attention: int  # scores QKᵀ and weighted values: 4 n² d
    mlp: int  # two matrices: 4 n d d_ff

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.mlp


def layer_flops(n: int, d: int, d_ff: int | None = None) -> LayerFlops:
    """FLOPs of one self-attention layer on n tokens of width d (softmax and norms neglected)."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got {n}, {d}")
    d_ff = 4 * d if d_ff is None else d_ff
    return LayerFlops(8 * n * d * d, 4 * n * n * d, 4 * n * d * d_ff)


def prefill_flops(m_image: int, l_text: int, d: int, layers: int, d_ff: int | None = None) -> int:
    """Forward FLOPs to read a prompt of M image + L text tokens through ``layers`` layers."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return layers * layer_flops(m_image + l_text, d, d_ff).total


def measure_layer_time(n: int, d: int = 256, heads: int = 4, repeats: int = 5, seed: int = 0) -> float:
    """Median seconds for one forward pass of a PyTorch encoder layer on (1, n, d) (CPU timing)."""
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True).eval()
    x = torch.randn(1, n, d)
    times = []
    with torch.inference_mode():
        layer(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
