"""The token budget: context-window arithmetic and the cost of attention (Chapter 1 §1.1).

The one FLOP module: every per-layer formula (attention, MLP, whole layer) used by Chapters 1, 4
and the benchmarks lives here; 1 multiply-add = 2 FLOPs, norms and softmax neglected.
"""
from __future__ import annotations

import dataclasses

import torch

from ..util import median_seconds


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


def _check(**kw: int) -> None:
    for k, v in kw.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{k} must be a positive int, got {v!r}")


def attention_flops(n_q: int, n_kv: int, d: int, d_kv: int | None = None) -> int:
    """FLOPs of one attention: n_q queries over n_kv keys of width d (context width d_kv). Chapter 4 §4.4."""
    d_kv = d if d_kv is None else d_kv
    _check(n_q=n_q, n_kv=n_kv, d=d, d_kv=d_kv)
    proj = 2 * n_q * d * d * 2 + 2 * n_kv * d_kv * d * 2  # Q and O on queries; K and V on the context
    return proj + 4 * n_q * n_kv * d


def ffn_flops(n: int, d: int, mult: int = 4) -> int:
    """FLOPs of the two-layer MLP of width mult*d on n tokens: 4 * mult * n * d^2. Chapter 4 §4.4."""
    _check(n=n, d=d, mult=mult)
    return 4 * mult * n * d * d


def self_attention_layer_flops(n: int, d: int, mlp_ratio: int = 4) -> int:
    """One transformer layer over all n tokens: 8nd^2 + 4n^2 d + 16nd^2 (ratio 4). O(n^2). Chapter 4 §4.4."""
    return attention_flops(n, n, d) + ffn_flops(n, d, mlp_ratio)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one transformer layer (1 multiply-add = 2 FLOPs)."""

    projections: int  # Q, K, V and output: 8 n d²
    attention: int  # scores QKᵀ and weighted values: 4 n² d
    mlp: int  # two matrices: 4 n d d_ff (a gated MLP's three: 6 n d d_ff)

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.mlp


def layer_flops(n: int, d: int, d_ff: int | None = None, mlp_matrices: int = 2) -> LayerFlops:
    """FLOPs of one self-attention layer on n tokens of width d (softmax and norms neglected).

    ``mlp_matrices`` is 2 for the classic MLP, 3 for a gated (SwiGLU) one as in Llama (Chapter 5)."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got {n}, {d}")
    if mlp_matrices not in (2, 3):
        raise ValueError(f"mlp_matrices must be 2 (MLP) or 3 (gated MLP), got {mlp_matrices!r}")
    d_ff = 4 * d if d_ff is None else d_ff
    scores = 4 * n * n * d
    return LayerFlops(attention_flops(n, n, d) - scores, scores, 2 * mlp_matrices * n * d * d_ff)


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
    with torch.inference_mode():
        return median_seconds(lambda: layer(x), repeats, warmup=1)
