"""What fusion costs: FLOPs of prefix vs gated fusion as M and L grow, and measured time (Chapter 5 §5.9).

Prefix fusion runs every layer over ``M + L`` tokens, so self-attention grows as ``(M + L)²``;
gated fusion runs the LM over ``L`` text tokens and adds cross-attention blocks whose cost is
linear in ``M`` (``L · M``) every ``every`` layers. Counts are multiply-adds × 2 for one forward pass.
"""
from __future__ import annotations

import torch

from ..rd.budget import attention_flops, ffn_flops, layer_flops
from ..util import median_seconds
from .gated import GatedAdapter
from .text import LMConfig, build_lm


def _check(M: int, L: int, d: int, layers: int) -> None:
    for name, v in (("M", M), ("L", L), ("d", d), ("layers", layers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "M" else 1):
            raise ValueError(f"{name} must be a non-negative int (positive for L, d, layers), got {v!r}")


def prefix_flops(M: int, L: int, d: int, layers: int, ff: int | None = None) -> int:
    """Forward FLOPs of a Llama LM over ``M`` image + ``L`` text tokens (dense attention). §5.9."""
    _check(M, L, d, layers)
    return layers * layer_flops(M + L, d, ff or 3 * d, mlp_matrices=3).total


def gated_flops(M: int, L: int, d: int, layers: int, every: int = 1, ff: int | None = None, ffn_mult: int = 2) -> int:
    """Forward FLOPs of the LM over ``L`` text tokens plus gated cross-attention to ``M`` media tokens. §5.9."""
    _check(M, L, d, layers)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    lm = prefix_flops(0, L, d, layers, ff)
    blocks = len(range(0, layers, every))
    # with no media only the query and output projections of the cross-attention run
    xattn = (attention_flops(L, M, d) if M else 4 * L * d * d) + ffn_flops(L, d, ffn_mult)
    return lm + blocks * xattn


@torch.no_grad()
def measure_forward(route: str, M: int, L: int, cfg: LMConfig | None = None, every: int = 1,
                    repeats: int = 3, batch: int = 8) -> float:
    """Median seconds of one forward pass (``route`` = ``'prefix'`` or ``'gated'``) on random inputs. §5.9."""
    if route not in ("prefix", "gated"):
        raise ValueError(f"route must be 'prefix' or 'gated', got {route!r}")
    cfg = cfg or LMConfig.tiny().replace(max_positions=max(256, M + L + 1))
    lm = build_lm(cfg)
    g = torch.Generator().manual_seed(0)
    if route == "prefix":
        x = torch.randn(batch, M + L, cfg.hidden, generator=g)
        run = lambda: lm.model(inputs_embeds=x)  # noqa: E731
    else:
        adapter = GatedAdapter(lm.model.layers, cfg.hidden, every, cfg.heads)
        x = torch.randn(batch, L, cfg.hidden, generator=g)
        media = torch.randn(batch, max(M, 1), cfg.hidden, generator=g)

        def run():
            with adapter.media(media):
                return lm.model(inputs_embeds=x)
    return median_seconds(run, repeats=repeats, warmup=1)
