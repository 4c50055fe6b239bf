"""Entropy models: quantisation modes, likelihoods, the factorized entropy bottleneck and the
conditional (Gaussian / Laplace / logistic) model with its fixed scale table (Chapter 3 §3.2–3.4)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cdf import CdfTables
from .layers import lower_bound

MODES = ("noise", "round", "ste")
FAMILIES = ("gaussian", "laplace", "logistic")
LIKELIHOOD_BOUND = 1e-9


def quantize(x: torch.Tensor, mode: str, means: torch.Tensor | None = None) -> torch.Tensor:
    """Training proxy for rounding (any shape): 'noise' adds U(-1/2, 1/2), 'round' rounds
    (zero gradient), 'ste' rounds forward and passes the gradient straight through. §3.2."""
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    m = means if means is not None else 0.0
    r = torch.round(x - m) + m
    if mode == "round":
        return r
    if mode == "ste":
        return x + (r - x).detach()
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


# ---------------------------------------------------------------------------------------
# Likelihoods of a quantised continuous variable
# ---------------------------------------------------------------------------------------
def standard_cdf(x: torch.Tensor, family: str) -> torch.Tensor:
    """CDF of the unit-scale family at x (precise in the lower tail, where it is used)."""
    if family == "gaussian":
        return 0.5 * torch.erfc(-x / math.sqrt(2.0))
    if family == "laplace":
        e = torch.exp(-x.abs())
        return torch.where(x < 0, 0.5 * e, 1.0 - 0.5 * e)
    if family == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def standard_pdf(x: torch.Tensor, family: str) -> torch.Tensor:
    """Density of the unit-scale family at x."""
    if family == "gaussian":
        return torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    if family == "laplace":
        return 0.5 * torch.exp(-x.abs())
    if family == "logistic":
        s = torch.sigmoid(x)
        return s * (1 - s)
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def discretized_likelihood(y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None,
                           family: str = "gaussian") -> torch.Tensor:
    """P(integer bin of y) = F((y - mu + 1/2)/s) - F((y - mu - 1/2)/s), same shape as y. §3.3.

    Computed on abs(y - mu) so both CDF values sit in the lower tail (no cancellation).
    """
    v = (y - means if means is not None else y).abs()
    upper = standard_cdf((0.5 - v) / scales, family)
    lower = standard_cdf((-0.5 - v) / scales, family)
    return upper - lower


def rate_gradients(y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor,
                   family: str = "gaussian") -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic d(-log2 p)/d mu and d(-log2 p)/d s of :func:`discretized_likelihood`. §3.3.

    With v = y - mu, a = (1/2 - abs(v))/s, b = (-1/2 - abs(v))/s and density f, p = F(a) - F(b), so
    dp/dmu = sign(v) (f(a) - f(b)) / s, dp/ds = -(a f(a) - b f(b)) / s, and
    d(-log2 p) = -dp / (p ln 2). (Working with abs(v) keeps both CDFs in the precise lower tail.)
    """
    v = y - means
    a = (0.5 - v.abs()) / scales
    b = (-0.5 - v.abs()) / scales
    p = standard_cdf(a, family) - standard_cdf(b, family)
    fa, fb = standard_pdf(a, family), standard_pdf(b, family)
    dp_dmu = torch.sign(v) * (fa - fb) / scales
    dp_ds = -(a * fa - b * fb) / scales
    k = -1.0 / (p * math.log(2.0))
    return k * dp_dmu, k * dp_ds


def tail_bound(scale: float, family: str, tail_mass: float) -> float:
    """Half-width t with P(abs(X) > t) = tail_mass for the family at this scale."""
    if family == "gaussian":
        from scipy.stats import norm

        return -float(norm.ppf(tail_mass / 2)) * scale
    if family == "laplace":
        return math.log(1.0 / tail_mass) * scale
    if family == "logistic":
        return math.log(2.0 / tail_mass - 1.0) * scale
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def _np_cdf(x: np.ndarray, family: str) -> np.ndarray:
    if family == "gaussian":
        from scipy.special import erfc

        return 0.5 * erfc(-x / math.sqrt(2.0))
    if family == "laplace":
        return np.where(x < 0, 0.5 * np.exp(-np.abs(x)), 1 - 0.5 * np.exp(-np.abs(x)))
    return 1.0 / (1.0 + np.exp(-x))


def default_scale_table(lo: float = 0.11, hi: float = 64.0, levels: int = 64) -> np.ndarray:
    """Log-spaced fixed scales (like CompressAI's, which go up to 256): tables exist for these only. §3.7."""
    return np.exp(np.linspace(math.log(lo), math.log(hi), levels))


class _TableBuffers(nn.Module):
    """Holds quantised CDF tables as integer buffers, so they travel in the safetensors file."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("_cdf", "_cdf_length", "_offset"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _store(self, tables: CdfTables) -> None:
        dev = self._cdf.device
        self._cdf = torch.from_numpy(tables.cdf.astype(np.int32)).to(dev)
        self._cdf_length = torch.from_numpy(tables.lengths.astype(np.int32)).to(dev)
        self._offset = torch.from_numpy(tables.offsets.astype(np.int32)).to(dev)
        self._cached = tables

    def tables(self) -> CdfTables:
        """The stored integer CDF tables (call ``update()`` after training)."""
        if self._cdf.numel() == 0:
            raise ValueError(f"{type(self).__name__} has no CDF tables yet: call update() first")
        cached = getattr(self, "_cached", None)
        if cached is None:
            cached = self._cached = CdfTables(self._cdf.cpu().numpy(), self._cdf_length.cpu().numpy(),
                                              self._offset.cpu().numpy())
        return cached


class EntropyBottleneck(_TableBuffers):
    """Factorized prior (B, C, H, W) -> (quantised, likelihoods): one learned univariate density
    per channel (Ballé et al. 2018, appendix 6.1). Chapter 3 §3.3.

    The cumulative density c(x) is a small monotone network (softplus-positive matrices, tanh
    gates); p(bin) = c(x + 1/2) - c(x - 1/2). The ``quantiles`` parameter learns each channel's
    tail_mass/2, median and 1 - tail_mass/2 points through :meth:`loss` (the auxiliary loss),
    which set the range of the coding tables; the median is the rounding offset.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0,
                 tail_mass: float = 1e-9) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels, self.filters, self.tail_mass = channels, tuple(filters), float(tail_mass)
        dims = (1,) + self.filters + (1,)
        scale = init_scale ** (1 / (len(self.filters) + 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        self.quantiles = nn.Parameter(torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1))
        t = math.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def logits_cumulative(self, x: torch.Tensor, stop_gradient: bool = False) -> torch.Tensor:
        """(C, 1, N) -> (C, 1, N) logits of the per-channel CDF."""
        for i in range(len(self.filters) + 1):
            m, b = self.matrices[i], self.biases[i]
            if stop_gradient:
                m, b = m.detach(), b.detach()
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.filters):
                f = self.factors[i].detach() if stop_gradient else self.factors[i]
                x = x + torch.tanh(f) * torch.tanh(x)
        return x

    def medians(self) -> torch.Tensor:
        """(C,) rounding offsets."""
        return self.quantiles[:, 0, 1]

    def likelihood(self, x: torch.Tensor, stop_gradient: bool = False) -> torch.Tensor:
        """Per-channel bin probability of (B, C, H, W) values."""
        v = x.transpose(0, 1).reshape(self.channels, 1, -1)
        lower = self.logits_cumulative(v - 0.5, stop_gradient)
        upper = self.logits_cumulative(v + 0.5, stop_gradient)
        sign = -torch.sign(lower + upper).detach()  # evaluate in the tail where sigmoid is precise
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)

    def forward(self, x: torch.Tensor, mode: str = "noise") -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"EntropyBottleneck expects (B, {self.channels}, H, W), got {tuple(x.shape)}")
        med = self.medians().detach().view(1, -1, 1, 1)
        # noise is drawn channel-major (C, B, H, W), as CompressAI draws it, so that one seed gives
        # both libraries the same noise and the benchmark compares implementations, not draws
        x_hat = quantize(x.transpose(0, 1).contiguous(), mode, med.transpose(0, 1)).transpose(0, 1)
        lik = lower_bound(self.likelihood(x_hat), LIKELIHOOD_BOUND)
        return x_hat, lik

    def loss(self) -> torch.Tensor:
        """Auxiliary loss: moves ``quantiles`` to where the CDF logits hit their targets."""
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    @torch.no_grad()
    def update(self) -> CdfTables:
        """Tabulate each channel's pmf between its learned quantiles into integer CDFs."""
        q = self.quantiles.detach().double().cpu()[:, 0, :]
        med = q[:, 1]
        lo = torch.clamp(torch.ceil(med - q[:, 0]), min=0, max=2000).long()
        hi = torch.clamp(torch.ceil(q[:, 2] - med), min=0, max=2000).long()
        pmfs, tails, offsets = [], [], []
        for c in range(self.channels):
            k = torch.arange(-int(lo[c]), int(hi[c]) + 1, dtype=torch.float64) + med[c]
            v = k.view(1, 1, -1).float().expand(self.channels, 1, -1).contiguous()
            lower = self.logits_cumulative(v - 0.5, True)[c, 0].double()
            upper = self.logits_cumulative(v + 0.5, True)[c, 0].double()
            pmf = (torch.sigmoid(upper) - torch.sigmoid(lower)).clamp_min(0).numpy()
            tail = float(torch.sigmoid(lower[0]) + torch.sigmoid(-upper[-1]))
            pmfs.append(pmf)
            tails.append(tail)
            offsets.append(-int(lo[c]))
        tables = CdfTables.from_pmfs(pmfs, tails, offsets)
        self._store(tables)
        return tables

    def symbols(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, H, W) -> (integer values, table indexes), both flattened in C-order."""
        med = self.medians().detach().view(1, -1, 1, 1)
        vals = torch.round(x - med).long().cpu().numpy().reshape(-1)
        idx = np.broadcast_to(np.arange(self.channels).reshape(1, -1, 1, 1), x.shape).reshape(-1)
        return vals, idx

    def dequantize(self, values: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """Inverse of :meth:`symbols`: integer values -> (B, C, H, W) float tensor."""
        med = self.medians().detach().cpu().view(1, -1, 1, 1)
        return torch.from_numpy(np.asarray(values, np.float32).reshape(shape)) + med


class GaussianConditional(_TableBuffers):
    """Conditional model (B, C, H, W): y ~ family(mu, s) convolved with U(-1/2, 1/2); scales come
    from the hyperprior. Coding uses tables for a fixed set of scales only. Chapter 3 §3.4."""

    def __init__(self, family: str = "gaussian", scale_bound: float = 0.11, tail_mass: float = 1e-9,
                 scale_table: np.ndarray | None = None) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        self.family, self.scale_bound, self.tail_mass = family, float(scale_bound), float(tail_mass)
        table = default_scale_table() if scale_table is None else np.asarray(scale_table, np.float64)
        if table.ndim != 1 or table.size < 2 or np.any(np.diff(table) <= 0) or table[0] <= 0:
            raise ValueError("scale_table must be increasing positive scales")
        self.register_buffer("scale_table", torch.from_numpy(table.astype(np.float32)))

    def forward(self, y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None,
                mode: str = "noise") -> tuple[torch.Tensor, torch.Tensor]:
        if scales.shape != y.shape or (means is not None and means.shape != y.shape):
            raise ValueError(f"scales/means must match y's shape {tuple(y.shape)}")
        y_hat = quantize(y, mode, means)
        lik = discretized_likelihood(y_hat, lower_bound(scales, self.scale_bound), means, self.family)
        return y_hat, lower_bound(lik, LIKELIHOOD_BOUND)

    @torch.no_grad()
    def update(self) -> CdfTables:
        """Integer CDF tables for every scale in the table (float64, then quantised)."""
        pmfs, tails, offsets = [], [], []
        for s in self.scale_table.double().tolist():
            k = math.ceil(tail_bound(s, self.family, self.tail_mass))
            v = np.abs(np.arange(-k, k + 1, dtype=np.float64))
            pmf = _np_cdf((0.5 - v) / s, self.family) - _np_cdf((-0.5 - v) / s, self.family)
            pmfs.append(pmf)
            tails.append(2 * _np_cdf(np.array([(-0.5 - k) / s]), self.family)[0])
            offsets.append(-k)
        tables = CdfTables.from_pmfs(pmfs, tails, offsets)
        self._store(tables)
        return tables

    def build_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """Float path: index of the smallest table scale >= s (what breaks across devices, §3.7)."""
        s = scales.clamp_min(self.scale_bound)
        idx = torch.searchsorted(self.scale_table.to(s.device), s.contiguous().reshape(-1))
        return idx.clamp_max(len(self.scale_table) - 1).reshape(s.shape)
