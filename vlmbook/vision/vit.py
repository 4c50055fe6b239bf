"""A small Vision Transformer: patches -> tokens -> self-attention blocks. Chapter 4 §4.1."""
from __future__ import annotations

import torch
from torch import nn

from ..resample.layers import Block
from ..resample.positions import sincos_2d


def check_images(images: torch.Tensor, size: int) -> None:
    """Raise ValueError unless ``images`` is float (B, 3, size, size) in [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"images must be {size}x{size} pixels for this encoder, got {tuple(images.shape[-2:])}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got dtype {images.dtype}")


class VisionEncoder(nn.Module):
    """ViT: (B, 3, H, W) in [0, 1] -> patch tokens (B, N, D), N = (H / patch)^2, plus 2-D sin-cos positions."""

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by patch_size {patch_size}")
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.patch = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_2d(self.grid, self.grid, dim), persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, D) patch features (row-major patch order)."""
        check_images(images, self.image_size)
        x = self.patch((images - 0.5) / 0.25).flatten(2).transpose(1, 2) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
