"""Gated cross-attention (Flamingo-style) added to an unmodified ``transformers`` LM (Chapter 5 §5.5).

A :class:`GatedCrossAttention` block lets text hidden states attend to image features and adds
the result through ``tanh(gate)`` with the gate initialised at 0, so at initialisation the LM
computes exactly what it computed before. :class:`GatedAdapter` inserts one block before every
``every``-th decoder layer with forward pre-hooks — no line of ``transformers`` is edited.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class GatedCrossAttention(nn.Module):
    """x (B, T, d) attends to media (B, S, d); ``x + tanh(a)·xattn`` then ``+ tanh(f)·ffn``. §5.5."""

    def __init__(self, dim: int, heads: int = 4, ffn_mult: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Linear(ffn_mult * dim, dim))
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.ffn_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, media: torch.Tensor, media_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``media_mask`` (B, T, S) or (T, S) bool: True where text token t may see media token s."""
        if media.ndim != 3 or media.shape[0] != x.shape[0] or media.shape[2] != x.shape[2]:
            raise ValueError(f"media must be (B, S, {x.shape[2]}) with B={x.shape[0]}, got {tuple(media.shape)}")
        attn_mask, sees_any = None, None
        if media_mask is not None:
            mm = media_mask if media_mask.ndim == 3 else media_mask.expand(x.shape[0], -1, -1)
            if mm.shape != (x.shape[0], x.shape[1], media.shape[1]):
                raise ValueError(f"media_mask must be (B, T, S) = {(x.shape[0], x.shape[1], media.shape[1])}, "
                                 f"got {tuple(mm.shape)}")
            sees_any = mm.any(-1, keepdim=True)
            # rows that see nothing get a dummy full row (their output is zeroed below)
            allowed = mm | ~sees_any
            heads = self.attn.num_heads
            attn_mask = (~allowed).repeat_interleave(heads, 0)
        y, _ = self.attn(self.norm(x), media, media, attn_mask=attn_mask, need_weights=False)
        if sees_any is not None:
            y = y * sees_any
        x = x + torch.tanh(self.attn_gate) * y
        return x + torch.tanh(self.ffn_gate) * self.ffn(x)


class GatedAdapter(nn.Module):
    """Gated cross-attention blocks hooked in front of every ``every``-th decoder layer of an HF LM. §5.5.

    ``layers`` is the LM's list of decoder layers (``lm.model.layers`` for Llama). Media are set
    for the duration of a forward pass with ``with adapter.media(feats, mask): lm(...)``.
    """

    def __init__(self, layers: nn.ModuleList, dim: int, every: int = 1, heads: int = 4):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.positions = [i for i in range(len(layers)) if i % every == 0]
        self.blocks = nn.ModuleList(GatedCrossAttention(dim, heads) for _ in self.positions)
        self._media: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        self._handles = [layers[i].register_forward_pre_hook(self._hook(k), with_kwargs=True)
                         for k, i in enumerate(self.positions)]

    def _hook(self, k: int):
        def hook(module, args, kwargs):
            if self._media is None:
                return None
            mask = self._mask
            if args:
                h = args[0]
                if mask is not None and mask.shape[-2] != h.shape[1]:
                    mask = mask[..., -h.shape[1]:, :]
                return (self.blocks[k](h, self._media, mask), *args[1:]), kwargs
            h = kwargs["hidden_states"]
            if mask is not None and mask.shape[-2] != h.shape[1]:
                mask = mask[..., -h.shape[1]:, :]
            kwargs = dict(kwargs, hidden_states=self.blocks[k](h, self._media, mask))
            return args, kwargs
        return hook

    @contextlib.contextmanager
    def media(self, media: torch.Tensor | None, media_mask: torch.Tensor | None = None) -> Iterator[None]:
        """Make ``media`` (B, S, d) visible to the hooked layers inside the ``with`` block."""
        prev = (self._media, self._mask)
        self._media, self._mask = media, media_mask
        try:
            yield
        finally:
            self._media, self._mask = prev

    def remove(self) -> None:
        """Detach the hooks (the LM is back to its original behaviour)."""
        for h in self._handles:
            h.remove()
        self._handles = []
