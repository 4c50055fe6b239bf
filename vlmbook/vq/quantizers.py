"""Vector quantisers behind one interface (Chapter 2 §2.2–§2.5).

Every quantiser takes ``(B, N, D)`` token vectors or a ``(B, D, H, W)`` feature map and returns a
:class:`QuantizerOutput`: the quantised tensor (same shape, gradients passed straight through),
integer codes (``(B, N)`` / ``(B, H, W)``, with a trailing axis for multi-code quantisers), the
auxiliary loss, and usage statistics (perplexity and the fraction of codes used in the batch).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config

KINDS = ("vq", "gumbel", "fsq", "lfq", "residual", "grouped")


@dataclasses.dataclass
class QuantizerOutput:
    """What every quantiser returns. Chapter 2 §2.2."""

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor
    used_fraction: torch.Tensor


@dataclasses.dataclass
class QuantizerConfig(Config):
    """Settings for every quantiser kind; ``make_quantizer`` builds the right one."""

    kind: str = "vq"
    dim: int = 16
    codebook_size: int = 256
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    restart_threshold: float = 1.0
    kmeans_init: bool = True
    kmeans_iters: int = 10
    levels: tuple = (8, 5, 5, 5)
    entropy_weight: float = 0.1
    entropy_temperature: float = 0.1
    temperature: float = 1.0
    kl_weight: float = 5e-4
    depth: int = 4
    groups: int = 2

    def validate(self) -> None:
        super().validate()
        self.check_choice("kind", KINDS)
        for name in ("dim", "codebook_size", "kmeans_iters", "depth", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                self._fail(name, "must be an int")
        self.check_positive("dim", "codebook_size", "kmeans_iters", "depth", "groups", "temperature",
                            "entropy_temperature")
        for name in ("ema", "kmeans_init"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "must be True or False")
        self.check_range("decay", 0.0, 0.999999)
        for name in ("beta", "eps", "restart_threshold", "entropy_weight", "kl_weight"):
            self.check_range(name, 0.0, 1e6)
        if self.kind == "fsq":
            lv = tuple(self.levels)
            if not lv or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in lv):
                self._fail("levels", "must be a non-empty tuple of ints >= 2")
            if self.codebook_size != math.prod(lv):
                self._fail("codebook_size", f"must equal the product of levels {lv} = {math.prod(lv)}")
        if self.kind == "lfq" and (self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1)):
            self._fail("codebook_size", "must be a power of two >= 2 for LFQ")
        if self.kind == "lfq" and self.codebook_size > 2**16:
            self._fail("codebook_size", "must be <= 2**16 for LFQ (its entropy loss enumerates all codes)")
        if self.kind == "grouped":
            self.check_divisible("dim", self.groups, "groups")

    @classmethod
    def tiny(cls) -> "QuantizerConfig":
        return cls()

    @classmethod
    def base(cls) -> "QuantizerConfig":
        return cls(dim=32, codebook_size=1024)


# ---------------------------------------------------------------------------------------
# Shapes, statistics, the straight-through estimator, k-means
# ---------------------------------------------------------------------------------------
def flatten_vectors(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor], tuple[int, ...]]:
    """(B, N, D) or (B, D, H, W) -> (M, D) rows, a function that restores the layout, code shape. §2.2."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("quantiser input must be a floating-point tensor")
    if x.dim() == 3:
        b, n, d = x.shape
        if d != dim:
            raise ValueError(f"expected (B, N, {dim}) input, got shape {tuple(x.shape)}")
        return x.reshape(b * n, d), (lambda f: f.reshape(b, n, dim)), (b, n)
    if x.dim() == 4:
        b, d, h, w = x.shape
        if d != dim:
            raise ValueError(f"expected (B, {dim}, H, W) input, got shape {tuple(x.shape)}")
        return (x.permute(0, 2, 3, 1).reshape(b * h * w, d),
                (lambda f: f.reshape(b, h, w, dim).permute(0, 3, 1, 2)), (b, h, w))
    raise ValueError(f"quantiser input must be (B, N, D) or (B, D, H, W), got shape {tuple(x.shape)}")


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (any shape, ints in [0, K)) -> (perplexity = exp(entropy of usage), used fraction). §2.3."""
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    flat = codes.reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("codebook_usage needs at least one code")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got range [{int(flat.min())}, {int(flat.max())}]")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return entropy.exp().float(), (counts > 0).double().mean().float()


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Value of ``q``, gradient of the identity with respect to ``x`` (the STE). §2.2."""
    return x + (q - x).detach()


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(M, D), (K, D) -> (M, K) squared Euclidean distances. §2.1."""
    return x.pow(2).sum(1, keepdim=True) - 2.0 * x @ codebook.t() + codebook.pow(2).sum(1)[None, :]


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's algorithm: (M, D) points -> ((k, D) centroids, (M,) assignments). §2.1."""
    if x.dim() != 2 or x.shape[0] < 1:
        raise ValueError(f"kmeans needs (M, D) points with M >= 1, got shape {tuple(x.shape)}")
    if k < 1 or iters < 0:
        raise ValueError(f"kmeans needs k >= 1 and iters >= 0, got k={k}, iters={iters}")
    x = x.detach()
    m = x.shape[0]
    idx = torch.randperm(m, generator=generator, device="cpu")[:k] if m >= k else \
        torch.randint(0, m, (k,), generator=generator, device="cpu")
    centroids = x[idx.to(x.device)].clone()
    assign = squared_distances(x, centroids).argmin(1)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        assign = squared_distances(x, centroids).argmin(1)
    return centroids, assign


def lloyd_distortions(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> list[float]:
    """Mean squared error of Lloyd's codebook after 0, 1, …, iters iterations (never increases). §2.1."""
    out = []
    for i in range(iters + 1):
        g = None if generator is None else torch.Generator().manual_seed(generator.initial_seed())
        c, a = kmeans(x, k, i, g)
        out.append(float((x - c[a]).pow(2).sum(1).mean()))
    return out


def ring_mixture(n: int = 2000, modes: int = 8, seed: int = 0) -> torch.Tensor:
    """(n, 2) points from ``modes`` Gaussian blobs on a ring plus a wide central blob: the Voronoi example. §2.1."""
    if n < 1 or modes < 1:
        raise ValueError(f"ring_mixture needs n >= 1 and modes >= 1, got {n}, {modes}")
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(0, modes + 1, (n,), generator=g)
    angle = 2 * math.pi * which.float() / modes
    centre = torch.stack([angle.cos(), angle.sin()], 1) * 2.0
    centre[which == modes] = 0.0
    scale = torch.where(which == modes, 0.6, 0.25)[:, None]
    return centre + scale * torch.randn(n, 2, generator=g)


# ---------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------
class Quantizer(nn.Module):
    """Base class: subclasses implement ``_quantize((M, D)) -> (q, codes, loss)`` and ``lookup``."""

    codes_per_vector = 1

    def __init__(self, cfg: QuantizerConfig):
        super().__init__()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_size = cfg.codebook_size

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """(B, N, D) or (B, D, H, W) -> QuantizerOutput. Chapter 2 §2.2."""
        flat, restore, lead = flatten_vectors(x, self.dim)
        q, codes, loss = self._quantize(flat)
        with torch.no_grad():
            ppl, used = self._usage(codes)
        shape = lead if self.codes_per_vector == 1 else (*lead, self.codes_per_vector)
        return QuantizerOutput(restore(q), codes.reshape(shape), loss, ppl, used)

    def _usage(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if codes.dim() == 1:
            return codebook_usage(codes, self.codebook_size)
        stats = [codebook_usage(codes[:, i], self.codebook_size) for i in range(codes.shape[1])]
        return torch.stack([s[0] for s in stats]).mean(), torch.stack([s[1] for s in stats]).mean()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input as in ``forward`` -> integer codes only (no state update). §2.2."""
        was = self.training
        self.eval()
        try:
            return self(x).codes
        finally:
            self.train(was)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (..., [L]) -> vectors (..., D). §2.2."""
        raise NotImplementedError

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point:
            raise ValueError("codes must be an integer tensor")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        if self.codes_per_vector > 1 and (codes.dim() < 1 or codes.shape[-1] != self.codes_per_vector):
            raise ValueError(f"codes need a last axis of {self.codes_per_vector} (one code per stage/group)")
        return codes.long()


class VectorQuantizer(Quantizer):
    """Nearest-codeword VQ with the STE, codebook + commitment losses, optional EMA codebook,
    dead-code restart and k-means initialisation. Chapter 2 §2.2–§2.3 (van den Oord et al., 2017)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        k, d = cfg.codebook_size, cfg.dim
        init = torch.randn(k, d)
        if cfg.ema:
            self.register_buffer("embed", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.embed = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("initted", torch.tensor(not cfg.kmeans_init))

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D) codewords."""
        return self.embed

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(self._check_codes(codes), self.embed)

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if self.training and not bool(self.initted):
            self.init_kmeans(z)
        codes = squared_distances(z.detach(), self.embed.detach()).argmin(1)
        q = F.embedding(codes, self.embed)
        commit = F.mse_loss(z, q.detach())
        loss = cfg.beta * commit if cfg.ema else cfg.beta * commit + F.mse_loss(q, z.detach())
        if self.training:
            with torch.no_grad():
                self.update_statistics(z.detach().float(), codes)
        return straight_through(z, q.detach() if cfg.ema else q), codes, loss

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor) -> None:
        """Set the codebook to k-means centroids of a batch (M, D). §2.3."""
        cents, assign = kmeans(z.detach().float(), self.codebook_size, self.cfg.kmeans_iters)
        counts = torch.bincount(assign, minlength=self.codebook_size).float().clamp_min(1.0)
        self.embed.data.copy_(cents)
        self.cluster_size.copy_(counts)
        if self.cfg.ema:
            self.embed_sum.copy_(cents * counts[:, None])
        self.initted.fill_(True)

    @torch.no_grad()
    def update_statistics(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of counts (and, with ``ema``, of code sums and the codebook), then dead-code restart. §2.3."""
        cfg, k = self.cfg, self.codebook_size
        counts = torch.bincount(codes, minlength=k).to(z.dtype)
        self.cluster_size.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
        if cfg.ema:
            sums = torch.zeros(k, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, codes, z)
            self.embed_sum.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + cfg.eps) / (n + k * cfg.eps) * n  # Laplace smoothing
            self.embed.copy_(self.embed_sum / smoothed[:, None])
        if cfg.restart_threshold > 0:
            self.restart_dead_codes(z)

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Move codes whose EMA count is below ``restart_threshold`` onto random batch vectors; returns how many. §2.3."""
        dead = (self.cluster_size < self.cfg.restart_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        m = z.shape[0]
        pick = torch.randperm(m)[: dead.numel()] if m >= dead.numel() else torch.randint(0, m, (dead.numel(),))
        new = z[pick.to(z.device)]
        self.embed.data[dead] = new.to(self.embed.dtype)
        self.cluster_size[dead] = self.cfg.restart_threshold
        if self.cfg.ema:
            self.embed_sum[dead] = new * self.cfg.restart_threshold
        return int(dead.numel())


class GumbelQuantizer(Quantizer):
    """dVAE-style relaxation: logits over K codes, Gumbel-softmax sample with temperature τ,
    KL to a uniform prior. Chapter 2 §2.4 (Jang et al., 2017; Ramesh et al., 2021)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        self.proj = nn.Linear(cfg.dim, cfg.codebook_size)
        self.embed = nn.Parameter(torch.randn(cfg.codebook_size, cfg.dim) / math.sqrt(cfg.dim))
        self.temperature = cfg.temperature
        self.hard = False

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(self._check_codes(codes), self.embed)

    def soft_assignments(self, z: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """(M, D) -> (M, K) Gumbel-softmax weights at temperature τ. §2.4."""
        tau = self.temperature if temperature is None else temperature
        if not tau > 0:
            raise ValueError(f"temperature must be > 0, got {tau}")
        return F.gumbel_softmax(self.proj(z), tau=tau, hard=self.hard, dim=-1)

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.proj(z)
        codes = logits.argmax(1)
        logp = F.log_softmax(logits, dim=1)
        kl = (logp.exp() * (logp + math.log(self.codebook_size))).sum(1).mean()
        if self.training:
            w = F.gumbel_softmax(logits, tau=self.temperature, hard=self.hard, dim=-1)
            q = w @ self.embed
        else:
            q = F.embedding(codes, self.embed)
        return q, codes, self.cfg.kl_weight * kl


def gumbel_temperature(step: int, total: int, start: float = 1.0, end: float = 1.0 / 16) -> float:
    """Exponential annealing of τ from ``start`` to ``end`` over ``total`` steps. §2.4."""
    if total < 1 or not 0 < end <= start:
        raise ValueError(f"need total >= 1 and 0 < end <= start, got total={total}, start={start}, end={end}")
    t = min(max(step, 0), total) / total
    return float(start * (end / start) ** t)


class FSQ(Quantizer):
    """Finite scalar quantisation: bound each of d channels, round to L_i levels; K = Π L_i.
    Chapter 2 §2.5 (Mentzer et al., 2024)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        levels = torch.tensor(cfg.levels, dtype=torch.long)
        self.register_buffer("levels", levels, persistent=False)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
        self.register_buffer("basis", basis, persistent=False)
        d = len(cfg.levels)
        self.proj_in = nn.Linear(cfg.dim, d) if cfg.dim != d else nn.Identity()
        self.proj_out = nn.Linear(d, cfg.dim) if cfg.dim != d else nn.Identity()

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """(M, d) -> values in the open range that rounds onto the L_i levels. §2.5."""
        lv = self.levels.to(z.dtype)
        half_l = (lv - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.proj_in(z)
        rounded = straight_through(self.bound(h), self.bound(h).round())
        half_w = (self.levels // 2).to(z.dtype)
        digits = (rounded.detach() + half_w).long()
        codes = (digits * self.basis).sum(1)
        return self.proj_out(rounded / half_w), codes, z.new_zeros(())

    def codes_to_digits(self, codes: torch.Tensor) -> torch.Tensor:
        """Index (...) -> per-channel level digits (..., d). §2.5."""
        return (self._check_codes(codes)[..., None] // self.basis) % self.levels

    def digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        """Per-channel digits (..., d) -> index (...). §2.5."""
        if digits.shape[-1] != len(self.cfg.levels) or (digits < 0).any() or (digits >= self.levels).any():
            raise ValueError(f"digits must have last axis {len(self.cfg.levels)} with values below {self.cfg.levels}")
        return (digits.long() * self.basis).sum(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        half_w = (self.levels // 2).float()
        return self.proj_out((self.codes_to_digits(codes).float() - half_w) / half_w)


class LFQ(Quantizer):
    """Lookup-free quantisation: sign of each of log2 K channels, with the entropy loss that
    pushes per-vector certainty and whole-codebook diversity. Chapter 2 §2.5 (Yu et al., 2023)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        bits = int(math.log2(cfg.codebook_size))
        self.bits = bits
        self.proj_in = nn.Linear(cfg.dim, bits) if cfg.dim != bits else nn.Identity()
        self.proj_out = nn.Linear(bits, cfg.dim) if cfg.dim != bits else nn.Identity()
        self.register_buffer("mask", 2 ** torch.arange(bits), persistent=False)
        all_codes = torch.arange(cfg.codebook_size)
        self.register_buffer("all_vectors", ((all_codes[:, None] & self.mask) > 0).float() * 2 - 1, persistent=False)

    def entropy_loss(self, h: torch.Tensor) -> torch.Tensor:
        """E[H(p(k|z))] - H(E[p(k|z)]) over the batch (M, bits). §2.5."""
        logits = 2 * h @ self.all_vectors.t() / self.cfg.entropy_temperature
        p = F.softmax(logits, dim=1)
        logp = F.log_softmax(logits, dim=1)
        per_sample = -(p * logp).sum(1).mean()
        avg = p.mean(0)
        codebook = -(avg * avg.clamp_min(1e-12).log()).sum()
        return per_sample - codebook

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.proj_in(z)
        q = torch.where(h > 0, 1.0, -1.0).to(h.dtype)
        codes = ((q > 0).long() * self.mask).sum(1)
        loss = self.cfg.beta * F.mse_loss(h, q.detach())
        if self.training and self.cfg.entropy_weight > 0:
            loss = loss + self.cfg.entropy_weight * self.entropy_loss(h)
        return self.proj_out(straight_through(h, q)), codes, loss

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        return self.proj_out(F.embedding(self._check_codes(codes), self.all_vectors))


class ResidualVQ(Quantizer):
    """``depth`` VQ stages, each quantising what the previous ones left; codes (..., depth).
    Chapter 2 §2.5 (Zeghidour et al., 2021; Lee et al., 2022)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        self.codes_per_vector = cfg.depth
        stage = cfg.replace(kind="vq")
        self.stages = nn.ModuleList(VectorQuantizer(stage) for _ in range(cfg.depth))

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual, total, codes, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for st in self.stages:
            q, c, l = st._quantize(residual)
            residual = residual - q.detach()
            total = total + q
            codes.append(c)
            loss = loss + l
        return total, torch.stack(codes, 1), loss

    @torch.no_grad()
    def partial_reconstructions(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, N, D) -> the quantised tensor using the first 1, 2, …, depth stages. §2.5."""
        codes = self.encode(x)
        return [sum(st.lookup(codes[..., i]) for i, st in enumerate(self.stages[: j + 1])) for j in range(len(self.stages))]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self._check_codes(codes)
        return sum(st.lookup(codes[..., i]) for i, st in enumerate(self.stages))


class GroupedVQ(Quantizer):
    """Product quantisation: split D into ``groups`` slices, each with its own codebook of K codes
    (K^groups combinations). Chapter 2 §2.5 (Jégou et al., 2011)."""

    def __init__(self, cfg: QuantizerConfig):
        super().__init__(cfg)
        self.codes_per_vector = cfg.groups
        stage = cfg.replace(kind="vq", dim=cfg.dim // cfg.groups, groups=1)
        self.parts = nn.ModuleList(VectorQuantizer(stage) for _ in range(cfg.groups))

    def _quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = [p._quantize(c) for p, c in zip(self.parts, z.chunk(len(self.parts), dim=1))]
        return (torch.cat([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1),
                sum(o[2] for o in outs) / len(outs))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self._check_codes(codes)
        return torch.cat([p.lookup(codes[..., i]) for i, p in enumerate(self.parts)], -1)


_CLASSES = {"vq": VectorQuantizer, "gumbel": GumbelQuantizer, "fsq": FSQ, "lfq": LFQ,
            "residual": ResidualVQ, "grouped": GroupedVQ}


def make_quantizer(cfg: QuantizerConfig | None = None, **overrides) -> Quantizer:
    """Build the quantiser named by ``cfg.kind`` (fields may be overridden by keyword). §2.2."""
    cfg = (cfg or QuantizerConfig()).replace(**overrides) if overrides else (cfg or QuantizerConfig())
    if not isinstance(cfg, QuantizerConfig):
        raise ValueError(f"make_quantizer needs a QuantizerConfig, got {type(cfg).__name__}")
    return _CLASSES[cfg.kind](cfg)
