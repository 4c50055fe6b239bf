"""Bit-exact transforms: the same pixels and the same bytes on any machine and thread count (Chapter 3 §3.7).

A float convolution adds its products in an order that depends on the thread count and the CPU
kernel, so a pixel that sits on a rounding boundary can come out one level apart on two machines
(and the encoder can round a latent differently). Here every layer of an analysis or synthesis
transform runs in fixed point: activations carry ``ACT_BITS`` fractional bits, weights
``WEIGHT_BITS``, and every convolution adds integers whose partial sums stay below 2**53, so
float64 arithmetic is exact in any order (checked per layer). GDN's square root and division are
single IEEE operations on exact inputs, which every conforming CPU rounds the same way. The
hyper-synthesis uses the same idea in :mod:`.integer`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GDN

#: Fractional bits of activations (2**-12 is 0.06 of an 8-bit pixel level) and of weights.
ACT_BITS = 12
WEIGHT_BITS = 16
_EXACT = float(2 ** 53)
_A = float(2 ** ACT_BITS)
_W = float(2 ** WEIGHT_BITS)


def _fixed(t: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.round(t.detach().to("cpu", torch.float64) * scale)


def _check(bound: float, what: str) -> None:
    if not bound < _EXACT:
        raise ValueError(f"fixed-point sums of {what} would exceed 2**53 (activations too large)")


def _conv(m: nn.Conv2d | nn.ConvTranspose2d, a: torch.Tensor) -> torch.Tensor:
    w = _fixed(m.weight, _W)
    b = _fixed(m.bias, _A * _W) if m.bias is not None else None
    # The largest partial sum any summation order can reach: all |products| plus |bias|.
    if isinstance(m, nn.ConvTranspose2d):
        per_out = w.abs().sum(dim=(0, 2, 3))  # (O,): every input channel and tap can land on one output
        _check(float(a.abs().max()) * float(per_out.max()) + (float(b.abs().max()) if b is not None else 0.0),
               type(m).__name__)
        out = F.conv_transpose2d(a, w, b, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
    else:
        per_out = w.abs().sum(dim=(1, 2, 3))
        _check(float(a.abs().max()) * float(per_out.max()) + (float(b.abs().max()) if b is not None else 0.0),
               type(m).__name__)
        out = F.conv2d(a, w, b, m.stride, m.padding, m.dilation, m.groups)
    return torch.floor(out / _W)  # exact: a power-of-two division of an integer, then floor


def _gdn(m: GDN, a: torch.Tensor) -> torch.Tensor:
    beta, gamma = m.effective()
    g = _fixed(gamma, _W)[:, :, None, None]
    bt = _fixed(beta, _A * _W)
    sq = torch.floor(a * a / _A)  # x² with ACT_BITS fractional bits (a*a < 2**53 is checked)
    _check(float(a.abs().max()) ** 2, "GDN squares")
    _check(float(sq.max()) * float(g.sum(dim=(1, 2, 3)).max()) + float(bt.max()), "GDN")
    norm = F.conv2d(sq, g, bt) / (_A * _W)  # exact integer sum, exact power-of-two scaling
    root = torch.sqrt(norm)  # one correctly rounded IEEE operation
    return torch.round(a * root if m.inverse else a / root)


def exact_forward(seq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a Sequential of Conv2d / ConvTranspose2d / GDN / ReLU in fixed point on the CPU:
    (B, C, H, W) float -> same layout float32, identical on every machine. §3.7."""
    layers = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    a = _fixed(x, _A)
    with torch.no_grad():
        for m in layers:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                a = _conv(m, a)
            elif isinstance(m, GDN):
                a = _gdn(m, a)
            elif isinstance(m, nn.ReLU):
                a = a.clamp_min(0.0)
            else:
                raise ValueError(f"exact_forward supports Conv2d, ConvTranspose2d, GDN and ReLU, not {type(m).__name__}")
    return (a / _A).to(torch.float32)
