"""Integer hyper-synthesis: entropy parameters that decode bit-exactly on any machine (Chapter 3 §3.7).

The decoder must pick *exactly* the CDF table the encoder used for every symbol. If the
table index comes from a float network, a GPU and a CPU (or two BLAS libraries) can disagree
in the last bit of a scale that sits on a table boundary; the decoder then uses a different
table from that symbol on and the rest of the image is garbage. The remedy here follows the
integer-network idea of Ballé, Johnston & Minnen (2019): weights and activations of the
hyper-synthesis are fixed-point integers, and every sum is kept below 2**53 so float64 (or
int64) arithmetic is *exact* in any order. Scales and means then depend only on integers.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import nn

#: Fractional bits of activations and weights.
ACT_BITS = 12
WEIGHT_BITS = 12
_EXACT = float(2 ** 53)


def to_fixed(x: np.ndarray | torch.Tensor, bits: int) -> np.ndarray:
    """round(x * 2**bits) as float64 integers (an exact, elementwise, IEEE operation)."""
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    return np.round(a * float(2 ** bits))


def _conv_exact(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: tuple[int, int, int, int]) -> np.ndarray:
    """(C, H, W) integer-valued float64, w (O, C, k, k) -> (O, H', W') exact integer sums."""
    bound = np.abs(x).max(initial=0) * np.abs(w).sum(axis=(1, 2, 3)).max(initial=0) + np.abs(b).max(initial=0)
    if bound >= _EXACT:
        raise ValueError("fixed-point sums would exceed 2**53 (activations too large)")
    xp = np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    k = w.shape[-1]
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # (C, H', W', k, k)
    out = np.tensordot(w, win, axes=([1, 2, 3], [0, 3, 4]))  # (O, H', W')
    return out + b[:, None, None]


class IntegerSynthesis:
    """Fixed-point copy of a stack of Conv2d / ConvTranspose2d / ReLU layers. §3.7."""

    def __init__(self, seq: nn.Sequential) -> None:
        self.layers: list[tuple] = []
        for m in seq:
            if isinstance(m, nn.ReLU):
                self.layers.append(("relu",))
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                w = to_fixed(m.weight, WEIGHT_BITS)
                b = to_fixed(m.bias, ACT_BITS + WEIGHT_BITS)
                k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
                if isinstance(m, nn.ConvTranspose2d):
                    # transposed conv = zero-stuffing + padding + conv with flipped, swapped kernel
                    w = np.ascontiguousarray(np.flip(w, (2, 3)).transpose(1, 0, 2, 3))
                    op = m.output_padding[0]
                    self.layers.append(("deconv", w, b, s, (k - 1 - p, k - 1 - p + op)))
                else:
                    self.layers.append(("conv", w, b, s, (p, p)))
            else:
                raise ValueError(f"IntegerSynthesis supports Conv2d, ConvTranspose2d and ReLU, not {type(m).__name__}")

    def __call__(self, z_hat: torch.Tensor | np.ndarray) -> np.ndarray:
        """(1, C, h, w) float -> (1, O, H, W) int64 outputs with ACT_BITS fractional bits."""
        a = to_fixed(z_hat, ACT_BITS)
        if a.ndim != 4 or a.shape[0] != 1:
            raise ValueError(f"IntegerSynthesis takes one (1, C, h, w) tensor, got {a.shape}")
        a = a[0]
        scale = float(2 ** WEIGHT_BITS)
        for layer in self.layers:
            if layer[0] == "relu":
                a = np.maximum(a, 0.0)
                continue
            kind, w, b, s, (p0, p1) = layer
            if kind == "deconv":
                c, h, wd = a.shape
                up = np.zeros((c, (h - 1) * s + 1, (wd - 1) * s + 1))
                up[:, ::s, ::s] = a
                a = _conv_exact(up, w, b, 1, (p0, p1, p0, p1))
            else:
                a = _conv_exact(a, w, b, s, (p0, p1, p0, p1))
            a = np.floor(a / scale)  # exact: division by a power of two, then floor
        return a[None].astype(np.int64)


def scale_indexes(scales_fixed: np.ndarray, scale_table: np.ndarray, bound: float) -> np.ndarray:
    """Fixed-point scales -> table indexes by integer comparison (smallest table scale >= s)."""
    thresholds = np.ceil(np.asarray(scale_table, np.float64) * 2 ** ACT_BITS).astype(np.int64)
    s = np.maximum(scales_fixed, int(np.ceil(bound * 2 ** ACT_BITS)))
    return np.minimum(np.searchsorted(thresholds, s, side="left"), len(thresholds) - 1)
