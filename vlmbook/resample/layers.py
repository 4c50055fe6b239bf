"""Attention and feed-forward blocks written with plain matmuls (Chapter 4 §4.1).

Every attention in Chapter 4 — the ViT's self-attention, the Perceiver Resampler's
cross-attention over ``[features; latents]``, the Q-Former's two attentions — is this one
:class:`Attention` module. It is written with explicit matrix products (no fused kernel) so
that PyTorch's FLOP counter sees every multiply and :mod:`vlmbook.resample.cost` can be
checked against it exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def check_tokens(x: torch.Tensor, dim: int | None = None, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is a float (B, N, D) tensor (with D == ``dim`` when given)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one token, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have feature size D={dim}, got {x.shape[-1]} (shape {tuple(x.shape)})")


def check_mask(mask: torch.Tensor | None, x: torch.Tensor, name: str = "mask") -> torch.Tensor | None:
    """Validate a (B, N) key mask (True = a real token) for tokens ``x`` (B, N, D); returns it as bool."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(x.shape[:2]):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must have shape (B, N) = {tuple(x.shape[:2])}, got {got}")
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"{name} hides every token of some example; each needs at least one real token")
    return mask


class Attention(nn.Module):
    """Multi-head attention: queries (B, Nq, D) attend to context (B, Nk, Dk). Chapter 4 §4.1."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} must be divisible by heads={heads}")
        self.heads, self.head_dim = heads, dim // heads
        kv = context_dim or dim
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv, dim)
        self.v = nn.Linear(kv, dim)
        self.o = nn.Linear(dim, dim)
        # fused=True computes the same attention with PyTorch's fused SDPA kernel (used to time
        # the field's fast path; the FLOP counter and the weights need the explicit matmuls)
        self.fused = False

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, return_weights: bool = False):
        """(B, Nq, D), context (B, Nk, Dk), key_mask (B, Nk) bool -> (B, Nq, D) [, weights (B, H, Nq, Nk)]."""
        ctx = x if context is None else context
        b, nq, _ = x.shape
        nk = ctx.shape[1]
        h, dh = self.heads, self.head_dim
        q = self.q(x).view(b, nq, h, dh).transpose(1, 2)
        k = self.k(ctx).view(b, nk, h, dh).transpose(1, 2)
        v = self.v(ctx).view(b, nk, h, dh).transpose(1, 2)
        if self.fused and not return_weights:
            m = None if key_mask is None else key_mask[:, None, None, :]
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
            return self.o(att.transpose(1, 2).reshape(b, nq, h * dh))
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(dh))
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        out = self.o(torch.matmul(weights, v).transpose(1, 2).reshape(b, nq, h * dh))
        return (out, weights) if return_weights else out


class FeedForward(nn.Module):
    """Two-layer MLP with GELU, width ``mult * dim``: (B, N, D) -> (B, N, D). Chapter 4 §4.1."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block (self-attention + MLP): (B, N, D) -> (B, N, D). Chapter 4 §4.1."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm(x), key_mask=key_mask)
        return x + self.ff(x)
