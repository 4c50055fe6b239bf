"""The continuous route: projected image features replace ``<image>`` placeholders (Chapter 5 §5.3).

Any image encoder fits: an ``nn.Module`` mapping ``(B, 3, H, W)`` to patch features ``(B, N, D)``,
optionally followed by any compressor ``(B, N, D) -> (B, M, D')`` (Chapter 4's encoders and
resamplers). The features are projected to the LM width and written into ``inputs_embeds`` at
the placeholder positions with ``masked_scatter``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class PatchEncoder(nn.Module):
    """The chapter's default image encoder: (B, 3, H, W) -> (B, grid², dim). §5.3.

    Three 3×3 convolutions with a 2× max-pool after the first two, then the maximum over each of
    the ``grid × grid`` cells, a linear map to ``dim`` and a learned position embedding per patch.
    Max pooling keeps an object's strongest responses wherever it sits in its cell; averaging
    would dilute a small object with the wall around it (its shape became hard to read).
    """

    def __init__(self, dim: int = 128, grid: int = 4, channels: int = 64):
        super().__init__()
        for name, v in (("dim", dim), ("grid", grid), ("channels", channels)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise ValueError(f"PatchEncoder.{name} must be an int >= 2, got {v!r}")
        c = channels
        self.grid, self.dim = grid, dim
        self.net = nn.Sequential(
            nn.Conv2d(3, c // 2, 3, 1, 1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(c // 2, c, 3, 1, 1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(c, c, 3, 1, 1), nn.GELU(),
        )
        self.pool = nn.AdaptiveMaxPool2d(grid)
        self.proj = nn.Linear(c, dim)
        self.pos = nn.Parameter(torch.zeros(grid * grid, dim))
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        x = self.pool(self.net(images * 2 - 1))  # (B, c, g, g)
        return self.proj(x.flatten(2).transpose(1, 2)) + self.pos


class Projector(nn.Module):
    """Two-layer MLP from encoder width to LM width: (B, M, D') -> (B, M, d_model). §5.3."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def merge_image_features(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, features: torch.Tensor,
                         image_token_id: int) -> torch.Tensor:
    """Write (B, M, d) features into (B, T, d) embeddings where ``input_ids == image_token_id``. §5.3.

    Every row must hold exactly ``M`` placeholders; otherwise a ``ValueError`` says how many were
    found, so a truncated or mis-templated prompt never silently shifts image features.
    """
    if inputs_embeds.ndim != 3 or input_ids.shape != inputs_embeds.shape[:2]:
        raise ValueError(f"inputs_embeds (B, T, d) and input_ids (B, T) disagree: "
                         f"{tuple(inputs_embeds.shape)} vs {tuple(input_ids.shape)}")
    if features.ndim != 3 or features.shape[0] != input_ids.shape[0] or features.shape[2] != inputs_embeds.shape[2]:
        raise ValueError(f"features must be (B, M, {inputs_embeds.shape[2]}) with B={input_ids.shape[0]}, "
                         f"got {tuple(features.shape)}")
    mask = input_ids == image_token_id
    counts = mask.sum(1)
    M = features.shape[1]
    if bool((counts != M).any()):
        raise ValueError(f"image placeholder count mismatch: rows hold {counts.tolist()} <image> tokens "
                         f"but the encoder produced {M} features per image")
    return inputs_embeds.masked_scatter(mask.unsqueeze(-1), features.to(inputs_embeds.dtype))


def truncate_ids(ids: Sequence[int], max_length: int, image_ids: Sequence[int]) -> list[int]:
    """Cut a 1-D id list to at most ``max_length`` without cutting through an image block. §5.3.

    If the limit falls inside a run of image tokens, the whole run (and what follows) is dropped.
    """
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    img = set(int(i) for i in image_ids)
    cut = max_length
    if cut < len(ids) and cut > 0 and ids[cut] in img and ids[cut - 1] in img:
        while cut > 0 and ids[cut - 1] in img:
            cut -= 1
    return ids[:cut]
