"""Token compressors with one interface: (B, N, D) [+ mask (B, N)] -> (B, M, D'). Chapter 4 §4.2–4.3.

* :class:`PerceiverResampler` — M learned latents attend to ``[features; latents]`` (Flamingo).
* :class:`QFormer` — M learned queries with self-attention, cross-attention and an MLP (BLIP-2 style).
* :class:`PixelShuffle` — space-to-depth: each r x r group of patches becomes one token, then a projection.
* :class:`TokenLearner` — M learned spatial weightings of the tokens, each pooled into one token.
* :class:`ToMe` — bipartite soft matching merges the most similar tokens, size-weighted, until M remain.

All five share :class:`CompressorConfig` (``kind`` picks the class) and ``PretrainedMixin``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..config import Config
from ..hub import PretrainedMixin
from .layers import Attention, FeedForward, check_mask, check_tokens
from .positions import MediaEmbedding, sincos_2d

KINDS: tuple[str, ...] = ("perceiver", "qformer", "pixel_shuffle", "tokenlearner", "tome")


@dataclasses.dataclass
class CompressorConfig(Config):
    """Settings of a token compressor; ``kind`` is one of :data:`KINDS`."""

    kind: str = "perceiver"
    in_dim: int = 64
    dim: int = 64
    out_dim: int = 64
    num_tokens: int = 16
    in_tokens: int = 64
    depth: int = 2
    heads: int = 4
    ff_mult: int = 4
    max_media: int = 4
    positions: bool = False

    def validate(self) -> None:
        super().validate()
        self.check_choice("kind", KINDS)
        self.check_positive("in_dim", "dim", "out_dim", "num_tokens", "in_tokens", "depth", "heads", "ff_mult",
                            "max_media")
        self.check_divisible("dim", self.heads, "heads")
        if not isinstance(self.positions, bool):
            self._fail("positions", "must be True or False")
        if self.positions and self.in_dim % 4:
            self._fail("in_dim", "must be a multiple of 4 to add 2-D sin-cos positions")
        if self.kind == "pixel_shuffle":
            r2 = self.in_tokens // self.num_tokens
            g, r = math.isqrt(self.in_tokens), math.isqrt(max(r2, 1))
            if g * g != self.in_tokens:
                self._fail("in_tokens", "must be a square number of patches (a g x g grid) for pixel_shuffle")
            if self.in_tokens % self.num_tokens or r * r != r2 or g % r:
                self._fail("num_tokens", f"must be in_tokens / r^2 with r dividing the grid side {g}")
        if self.kind in ("tome", "pixel_shuffle") and self.num_tokens > self.in_tokens:
            self._fail("num_tokens", f"cannot exceed in_tokens={self.in_tokens} for {self.kind}")

    @classmethod
    def tiny(cls) -> "CompressorConfig":
        return cls()

    @classmethod
    def base(cls) -> "CompressorConfig":
        return cls(in_dim=256, dim=256, out_dim=512, num_tokens=64, in_tokens=256, depth=4, heads=8)


class TokenCompressor(nn.Module, PretrainedMixin):
    """Base class: checks shapes and masks, then calls ``_compress``. Chapter 4 §4.2."""

    config_class = CompressorConfig

    def __init__(self, config: CompressorConfig):
        super().__init__()
        if not isinstance(config, CompressorConfig):
            raise ValueError(f"{type(self).__name__} needs a CompressorConfig, got {type(config).__name__}")
        self.config = config

    def output_tokens(self, n: int) -> int:
        """How many tokens M come out for N tokens in."""
        return self.config.num_tokens

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D_in) [mask (B, N), True = real token] -> (B, M, D_out)."""
        check_tokens(x, self.config.in_dim)
        return self._compress(self.add_positions(x), check_mask(mask, x))

    def add_positions(self, x: torch.Tensor) -> torch.Tensor:
        """With ``config.positions``: (..., N, D) + 2-D sin-cos codes of a square patch grid. §4.5.

        Attention-based compressors see their input as a set; adding the patch positions again
        just before compressing tells every latent where each feature came from.
        """
        if not self.config.positions:
            return x
        n = x.shape[-2]
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f"positions=True needs a square grid of tokens, got N={n}")
        return x + sincos_2d(g, g, x.shape[-1]).to(x.device, x.dtype)

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class PerceiverResampler(TokenCompressor):
    """Flamingo's resampler: latents attend to ``[features; latents]``, then an MLP, ``depth`` times. §4.2.

    Accepts (B, N, D) or several media (B, T, N, D), to which learned media (time) embeddings are
    added before flattening. The output has M = ``num_tokens`` tokens whatever N and T are.
    """

    def __init__(self, config: CompressorConfig):
        super().__init__(config)
        c = config
        self.media = MediaEmbedding(c.max_media, c.in_dim)
        self.proj_in = nn.Linear(c.in_dim, c.dim) if c.in_dim != c.dim else nn.Identity()
        self.latents = nn.Parameter(torch.randn(c.num_tokens, c.dim) * 0.02)
        self.layers = nn.ModuleList()
        for _ in range(c.depth):
            self.layers.append(nn.ModuleDict({
                "norm_x": nn.LayerNorm(c.dim), "norm_l": nn.LayerNorm(c.dim),
                "attn": Attention(c.dim, c.heads), "ff": FeedForward(c.dim, c.ff_mult)}))
        self.norm = nn.LayerNorm(c.dim)
        self.proj_out = nn.Linear(c.dim, c.out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) or (B, T, N, D) [mask (B, N) or (B, T, N)] -> (B, M, D_out)."""
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            x, mask = self.media(self.add_positions(x), mask)  # positions per image, then per medium
            check_tokens(x, self.config.in_dim)
            return self._compress(x, check_mask(mask, x))
        return super().forward(x, mask)

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self._run(x, mask)[0]

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj_in(x)
        b, m = x.shape[0], self.config.num_tokens
        lat = self.latents.unsqueeze(0).expand(b, -1, -1)
        kv_mask = None if mask is None else torch.cat([mask, mask.new_ones(b, m)], dim=1)
        for layer in self.layers:
            q = layer["norm_l"](lat)
            kv = torch.cat([layer["norm_x"](x), q], dim=1)  # keys/values: [features; latents]
            out, w = layer["attn"](q, kv, key_mask=kv_mask, return_weights=True)
            lat = lat + out
            lat = lat + layer["ff"](lat)
        return self.proj_out(self.norm(lat)), w

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, M, N + M): last layer's attention of each latent, averaged over heads.

        The first N columns are the patches, the last M the latents themselves.
        """
        check_tokens(x, self.config.in_dim)
        return self._run(x, check_mask(mask, x))[1].mean(1)


class QFormer(TokenCompressor):
    """Q-Former-style queries: self-attention among queries, cross-attention to features, MLP. §4.3."""

    def __init__(self, config: CompressorConfig):
        super().__init__(config)
        c = config
        self.queries = nn.Parameter(torch.randn(c.num_tokens, c.dim) * 0.02)
        self.norm_ctx = nn.LayerNorm(c.in_dim)
        self.layers = nn.ModuleList()
        for _ in range(c.depth):
            self.layers.append(nn.ModuleDict({
                "norm_s": nn.LayerNorm(c.dim), "self_attn": Attention(c.dim, c.heads),
                "norm_c": nn.LayerNorm(c.dim), "cross_attn": Attention(c.dim, c.heads, context_dim=c.in_dim),
                "ff": FeedForward(c.dim, c.ff_mult)}))
        self.norm = nn.LayerNorm(c.dim)
        self.proj_out = nn.Linear(c.dim, c.out_dim)

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx = self.norm_ctx(x)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        for layer in self.layers:
            q = q + layer["self_attn"](layer["norm_s"](q))
            q = q + layer["cross_attn"](layer["norm_c"](q), ctx, key_mask=mask)
            q = q + layer["ff"](q)
        return self.proj_out(self.norm(q))


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Space-to-depth on a square token grid: (B, g*g, D) -> (B, (g/r)^2, D*r*r). Chapter 4 §4.3."""
    check_tokens(x)
    b, n, d = x.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"pixel_shuffle needs a square grid of tokens, got N={n}")
    if not isinstance(r, int) or r < 1 or g % r:
        raise ValueError(f"pixel_shuffle factor r={r!r} must be a positive int dividing the grid side {g}")
    x = x.reshape(b, g // r, r, g // r, r, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (g // r) ** 2, r * r * d)


class PixelShuffle(TokenCompressor):
    """Pixel shuffle (space-to-depth, factor r) then an MLP projection to D_out. Chapter 4 §4.3.

    Here M = N / r^2 is tied to N: the one compressor whose output length depends on the input.
    """

    def __init__(self, config: CompressorConfig):
        super().__init__(config)
        c = config
        self.r = math.isqrt(c.in_tokens // c.num_tokens)
        self.proj = nn.Sequential(nn.LayerNorm(c.in_dim * self.r ** 2), nn.Linear(c.in_dim * self.r ** 2, c.dim),
                                  nn.GELU(), nn.Linear(c.dim, c.out_dim))

    def output_tokens(self, n: int) -> int:
        return n // self.r ** 2

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.shape[1] != self.config.in_tokens:
            raise ValueError(f"this PixelShuffle expects N={self.config.in_tokens} tokens, got {x.shape[1]}")
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        return self.proj(pixel_shuffle(x, self.r))


class TokenLearner(TokenCompressor):
    """TokenLearner: token i = mean over patches of x * sigmoid(a_i(x)), for M learned maps a_i. §4.3."""

    def __init__(self, config: CompressorConfig):
        super().__init__(config)
        c = config
        self.attn = nn.Sequential(nn.LayerNorm(c.in_dim), nn.Linear(c.in_dim, c.dim), nn.GELU(),
                                  nn.Linear(c.dim, c.num_tokens))
        self.proj = nn.Linear(c.in_dim, c.out_dim)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, M) spatial weights in [0, 1] (zero on masked tokens)."""
        w = torch.sigmoid(self.attn(x))
        return w if mask is None else w * mask[..., None].to(w.dtype)

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        w = self.weights(x, mask)
        n = x.new_full((x.shape[0], 1, 1), x.shape[1]) if mask is None else mask.sum(1).to(x.dtype)[:, None, None]
        return self.proj(torch.einsum("bnm,bnd->bmd", w, x) / n)


def merge_tokens(x: torch.Tensor, r: int, size: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ToMe step: (B, N, D) -> (B, N - r, D) and sizes (B, N - r). Chapter 4 §4.3.

    Tokens alternate into sets A (even positions) and B (odd). Each A token finds its most similar
    B token (cosine); the r best-matched A tokens are merged into their partners as a size-weighted
    mean, and sizes add, so ``sum(size * x)`` and ``sum(size)`` are unchanged. Masked tokens get
    size 0 and, in set A, are merged first; a masked token in set B that receives no merge stays,
    with size 0 (weight 0 in any size-weighted use downstream).
    """
    check_tokens(x)
    b, n, d = x.shape
    if not isinstance(r, int) or r < 0 or r > n // 2:
        raise ValueError(f"merge_tokens can remove 0 <= r <= N // 2 = {n // 2} tokens per step, got r={r!r}")
    if size is None:
        size = x.new_ones(b, n)
    elif tuple(size.shape) != (b, n):
        raise ValueError(f"size must have shape (B, N) = {(b, n)}, got {tuple(size.shape)}")
    mask = check_mask(mask, x) if mask is not None else None
    if mask is not None:
        size = size * mask.to(size.dtype)
    if r == 0:
        return x, size
    a, bb = x[:, 0::2], x[:, 1::2]
    sa, sb = size[:, 0::2], size[:, 1::2]
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    bn = bb / bb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    sim = an @ bn.transpose(1, 2)  # (B, |A|, |B|)
    best, partner = sim.max(dim=-1)
    best = best.masked_fill(sa == 0, float("inf"))  # empty (masked) tokens merge first
    order = best.argsort(dim=-1, descending=True, stable=True)
    merged, kept = order[:, :r], order[:, r:].sort(dim=-1).values
    dst = partner.gather(1, merged)  # (B, r) indices into B
    src_x = a.gather(1, merged[..., None].expand(-1, -1, d))
    src_s = sa.gather(1, merged)
    wsum = (bb * sb[..., None]).scatter_add(1, dst[..., None].expand(-1, -1, d), src_x * src_s[..., None])
    new_sb = sb.scatter_add(1, dst, src_s)
    new_b = wsum / new_sb.clamp_min(1e-12)[..., None]
    keep_a = a.gather(1, kept[..., None].expand(-1, -1, d))
    keep_sa = sa.gather(1, kept)
    return torch.cat([keep_a, new_b], dim=1), torch.cat([keep_sa, new_sb], dim=1)


def tome_schedule(n: int, m: int) -> list[int]:
    """Tokens removed at each ToMe step to go from N to M (at most half of them per step)."""
    if not 1 <= m <= n:
        raise ValueError(f"ToMe needs 1 <= M <= N, got N={n}, M={m}")
    steps = []
    while n > m:
        r = min(n - m, n // 2)
        steps.append(r)
        n -= r
    return steps


class ToMe(TokenCompressor):
    """Token merging down to M tokens (parameter-free), then a linear projection to D_out. §4.3."""

    def __init__(self, config: CompressorConfig):
        super().__init__(config)
        c = config
        self.proj = nn.Linear(c.in_dim, c.out_dim)

    def merge(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) -> merged tokens (B, M, D) and their sizes (B, M)."""
        check_tokens(x, self.config.in_dim)
        size = None
        for r in tome_schedule(x.shape[1], self.config.num_tokens):
            x, size = merge_tokens(x, r, size, mask)
            mask = None
        if size is None:
            size = x.new_ones(x.shape[:2]) if mask is None else mask.to(x.dtype)
        return x, size

    def _compress(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if x.shape[1] < self.config.num_tokens:
            raise ValueError(f"ToMe cannot make M={self.config.num_tokens} tokens from N={x.shape[1]}")
        return self.proj(self.merge(x, mask)[0])


_CLASSES: dict[str, type[TokenCompressor]] = {
    "perceiver": PerceiverResampler, "qformer": QFormer, "pixel_shuffle": PixelShuffle,
    "tokenlearner": TokenLearner, "tome": ToMe,
}


def make_compressor(config: CompressorConfig | None = None, **overrides) -> TokenCompressor:
    """Build the compressor that ``config.kind`` names (``make_compressor(kind="tome", num_tokens=8)``)."""
    config = (config or CompressorConfig()).replace(**overrides) if overrides else (config or CompressorConfig())
    return _CLASSES[config.kind](config)


def load_compressor(path) -> TokenCompressor:
    """Load any compressor saved with ``save_pretrained`` (reads the class name from its config)."""
    import json
    from pathlib import Path

    meta = json.loads((Path(path) / "config.json").read_text())
    name = str(meta.get("class", "")).rsplit(".", 1)[-1]
    for cls in _CLASSES.values():
        if cls.__name__ == name:
            return cls.from_pretrained(path)
    raise ValueError(f"{path} does not hold a token compressor (class {meta.get('class')!r})")
