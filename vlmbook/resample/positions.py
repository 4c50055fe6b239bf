"""Position and media embeddings: 1-D and 2-D sin-cos tables, learned media/time embeddings.

Attention is blind to order: permute the keys and the output does not change. A ViT therefore
adds a position code to each patch; the fixed 2-D sin-cos code gives half the channels to the
row and half to the column (Chapter 4 §4.5). Flamingo-style resamplers add a learned
embedding per image (or video frame) before flattening several media into one token set.
"""
from __future__ import annotations

import torch
from torch import nn


def sincos_1d(n: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(n, dim) table: position p -> [sin(p w_k), cos(p w_k)], w_k = T^(-k/(dim/2)). Chapter 4 §4.5."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(f"dim must be a positive even int, got {dim!r}")
    if temperature <= 1:
        raise ValueError(f"temperature must be > 1, got {temperature}")
    return _sincos(torch.arange(n, dtype=torch.float64), dim, temperature).float()


def _sincos(pos: torch.Tensor, dim: int, temperature: float) -> torch.Tensor:
    k = torch.arange(dim // 2, dtype=torch.float64) / (dim // 2)
    ang = pos[:, None] * temperature ** (-k)[None, :]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def sincos_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(h*w, dim) table in row-major patch order: first half codes the row, second the column. §4.5."""
    if not isinstance(h, int) or not isinstance(w, int) or h < 1 or w < 1:
        raise ValueError(f"h and w must be positive ints, got {h!r}, {w!r}")
    if not isinstance(dim, int) or dim < 4 or dim % 4:
        raise ValueError(f"dim must be a positive multiple of 4, got {dim!r}")
    if temperature <= 1:
        raise ValueError(f"temperature must be > 1, got {temperature}")
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.cat([_sincos(ys.reshape(-1), dim // 2, temperature),
                      _sincos(xs.reshape(-1), dim // 2, temperature)], dim=1).float()


class MediaEmbedding(nn.Module):
    """Learned per-medium (time) embeddings: (B, T, N, D) -> (B, T*N, D) after adding e_t. §4.5."""

    def __init__(self, max_media: int, dim: int):
        super().__init__()
        if max_media < 1 or dim < 1:
            raise ValueError(f"max_media and dim must be >= 1, got {max_media}, {dim}")
        self.table = nn.Parameter(torch.zeros(max_media, dim))
        nn.init.normal_(self.table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, N, D), mask (B, T, N) or None -> flattened (B, T*N, D) and mask (B, T*N)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"media tokens must have shape (B, T, N, D), got {getattr(x, 'shape', type(x))}")
        b, t, n, d = x.shape
        if t > self.table.shape[0]:
            raise ValueError(f"got T={t} media but this embedding holds at most {self.table.shape[0]}")
        if d != self.table.shape[1]:
            raise ValueError(f"media tokens must have D={self.table.shape[1]}, got {d}")
        x = (x + self.table[:t][None, :, None, :]).reshape(b, t * n, d)
        if mask is not None:
            if tuple(mask.shape) != (b, t, n):
                raise ValueError(f"media mask must have shape (B, T, N) = {(b, t, n)}, got {tuple(mask.shape)}")
            mask = mask.reshape(b, t * n)
        return x, mask
