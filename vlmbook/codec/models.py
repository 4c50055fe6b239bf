"""The scale hyperprior (Ballé et al. 2018), its mean-scale variant, and their training (Chapter 3 §3.4, §3.9)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..hub import PretrainedMixin
from ..rd.metrics import psnr, psnr_from_mse
from ..util import step_generator, step_seed
from . import fastcoder, rans
from .cdf import BitstreamError
from .entropy import FAMILIES, MODES, EntropyBottleneck, GaussianConditional
from .exact import exact_forward
from .integer import ACT_BITS, IntegerSynthesis, scale_indexes
from .layers import GDN, conv, deconv

#: Total downsampling of x -> z: images are padded to a multiple of this.
STRIDE = 64
#: The seed stride the codec's trainers have always drawn batches with (not util's 1,000,003): kept so
#: retraining reproduces the committed codec artifacts (tests/test_codec_artifacts.py) batch for batch.
CODEC_SEED_STRIDE = 100_003


@dataclasses.dataclass
class CodecConfig(Config):
    """Architecture and rate–distortion trade-off of a learned codec."""

    model: str = "hyperprior"  # "hyperprior" (scales only) or "meanscale"
    N: int = 32
    M: int = 48
    family: str = "gaussian"
    lmbda: float = 0.01  # loss = lmbda * 255^2 * MSE + bits per pixel (CompressAI's convention)

    def validate(self) -> None:
        super().validate()
        self.check_choice("model", ("hyperprior", "meanscale"))
        self.check_choice("family", FAMILIES)
        self.check_positive("N", "M", "lmbda")

    @classmethod
    def tiny(cls) -> "CodecConfig":
        return cls(N=24, M=32)

    @classmethod
    def base(cls) -> "CodecConfig":
        return cls(N=128, M=192)


class HyperpriorCodec(nn.Module, PretrainedMixin):
    """x (B, 3, H, W) in [0, 1] -> y (B, M, H/16, W/16) -> z (B, N, H/64, W/64); the hyper-synthesis
    predicts each y element's scale (and mean, for ``meanscale``). Chapter 3 §3.4."""

    config_class = CodecConfig

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        # CompressAI's ScaleHyperprior builds its modules in this order, so under one seed the two
        # models start from identical weights (tested), and the benchmark compares implementations,
        # not initial draws.
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.g_a = nn.Sequential(conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M))
        self.g_s = nn.Sequential(deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
                                 deconv(N, N), GDN(N, inverse=True), deconv(N, 3))
        self.h_a = nn.Sequential(conv(M, N, 3, 1), nn.ReLU(), conv(N, N), nn.ReLU(), conv(N, N))
        if config.model == "hyperprior":
            self.h_s = nn.Sequential(deconv(N, N), nn.ReLU(), deconv(N, N), nn.ReLU(), conv(N, M, 3, 1), nn.ReLU())
        else:
            self.h_s = nn.Sequential(deconv(N, N), nn.ReLU(), deconv(N, N), nn.ReLU(), conv(N, 2 * M, 3, 1))
        self.gaussian_conditional = GaussianConditional(config.family)

    # -- training-time forward ---------------------------------------------------------
    def hyper_params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, h, w) -> scales (B, M, 4h, 4w) and means (or None)."""
        out = self.h_s(z_hat)
        if self.config.model == "hyperprior":
            return out, None
        means, scales = out.chunk(2, dim=1)
        return scales, means

    def forward(self, x: torch.Tensor, mode: str = "noise") -> dict[str, Any]:
        """Returns x_hat, y, y_hat, z_hat, scales, means and the likelihoods of y and z."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % STRIDE or x.shape[-2] % STRIDE:
            raise ValueError(f"expected (B, 3, H, W) with H, W multiples of {STRIDE}, got {tuple(x.shape)}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        y = self.g_a(x)
        z = self.h_a(y.abs() if self.config.model == "hyperprior" else y)
        z_hat, z_lik = self.entropy_bottleneck(z, mode)
        scales, means = self.hyper_params(z_hat)
        y_hat, y_lik = self.gaussian_conditional(y, scales, means, mode)
        return {"x_hat": self.g_s(y_hat), "y": y, "y_hat": y_hat, "z_hat": z_hat, "scales": scales,
                "means": means, "likelihoods": {"y": y_lik, "z": z_lik}}

    def aux_loss(self) -> torch.Tensor:
        """The entropy bottleneck's quantile loss."""
        return self.entropy_bottleneck.loss()

    def check_loaded(self) -> None:
        """Run by ``from_pretrained``: finite weights and valid CDF tables, or ValueError naming them. §3.7."""
        for k, v in self.state_dict().items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"tensor {k!r} holds NaN or infinity")
        expect = {"entropy_bottleneck": self.config.N, "gaussian_conditional": len(self.gaussian_conditional.scale_table)}
        for name, n in expect.items():
            mod = getattr(self, name)
            if mod._cdf.numel() == 0:
                continue  # not updated yet: compress() will say so
            try:
                t = mod.tables()
            except ValueError as e:
                raise ValueError(f"{name} CDF tables are corrupt: {e}") from None
            if t.num_tables != n:
                raise ValueError(f"{name} holds {t.num_tables} CDF tables, expected {n}")

    # -- coding ------------------------------------------------------------------------
    def update(self) -> None:
        """Build the integer CDF tables (stored as buffers). Call after training."""
        self.entropy_bottleneck.update()
        self.gaussian_conditional.update()
        self._int_hs = None

    def integer_params(self, z_hat: torch.Tensor) -> tuple[np.ndarray, torch.Tensor | None]:
        """Exact entropy parameters from z_hat (1, N, h, w): (table indexes, means or None). §3.7."""
        if getattr(self, "_int_hs", None) is None:
            self._int_hs = IntegerSynthesis(self.h_s)
        out = self._int_hs(z_hat)
        if self.config.model == "hyperprior":
            s_fixed, means = out, None
        else:
            m_fixed, s_fixed = np.split(out, 2, axis=1)
            means = torch.from_numpy((m_fixed.astype(np.float64) / 2 ** ACT_BITS).astype(np.float32))
        gc = self.gaussian_conditional
        idx = scale_indexes(s_fixed, gc.scale_table.cpu().numpy(), gc.scale_bound)
        return idx, means

    @torch.no_grad()
    def stream_symbols(self, x: torch.Tensor) -> tuple[list[tuple[np.ndarray, np.ndarray, Any]], tuple[int, int]]:
        """(1, 3, H, W) padded image -> ([(values, table indexes, tables) of y, of z], z size). §3.6."""
        if x.ndim != 4 or x.shape[0] != 1:
            raise ValueError(f"compress takes one image (1, 3, H, W), got {tuple(x.shape)}")
        # Fixed-point transforms: the same bytes whatever the thread count or CPU kernel (§3.7).
        y = exact_forward(self.g_a, x)
        z = exact_forward(self.h_a, y.abs() if self.config.model == "hyperprior" else y)
        eb = self.entropy_bottleneck
        z_vals, z_idx = eb.symbols(z)
        z_hat = eb.dequantize(z_vals, tuple(z.shape))
        idx, means = self.integer_params(z_hat)
        y = y.cpu()
        y_vals = torch.round(y - means if means is not None else y).long().numpy().reshape(-1)
        streams = [(y_vals, idx.reshape(-1), self.gaussian_conditional.tables()), (z_vals, z_idx, eb.tables())]
        return streams, (int(z.shape[2]), int(z.shape[3]))

    def compress(self, x: torch.Tensor) -> tuple[list[bytes], tuple[int, int]]:
        """(1, 3, H, W) padded image -> ([y stream, z stream], z spatial size), both range coded
        by the compiled coder (:mod:`.fastcoder`). §3.6."""
        streams, z_size = self.stream_symbols(x)
        return [fastcoder.encode(v, i, t) for v, i, t in streams], z_size

    @torch.no_grad()
    def decompress(self, streams: list[bytes], z_size: tuple[int, int]) -> torch.Tensor:
        """Inverse of :meth:`compress` -> x_hat (1, 3, 64h, 64w) clamped to [0, 1]."""
        if len(streams) != 2:
            raise BitstreamError("a hyperprior stream has exactly two parts (y, z)")
        h, w = z_size
        eb = self.entropy_bottleneck
        z_shape = (1, self.config.N, h, w)
        _, z_idx = eb.symbols(torch.zeros(z_shape))
        z_hat = eb.dequantize(fastcoder.decode(streams[1], z_idx, eb.tables()), z_shape)
        idx, means = self.integer_params(z_hat)
        y_vals = fastcoder.decode(streams[0], idx.reshape(-1), self.gaussian_conditional.tables())
        y_hat = torch.from_numpy(y_vals.astype(np.float32).reshape(idx.shape))
        if means is not None:
            y_hat = y_hat + means
        return exact_forward(self.g_s, y_hat).clamp(0, 1)  # the same pixels on every machine (§3.7)


# ---------------------------------------------------------------------------------------
# Loss and training
# ---------------------------------------------------------------------------------------
def bits(likelihoods: dict[str, torch.Tensor]) -> torch.Tensor:
    """Total -log2 likelihood over all latents (a scalar)."""
    return sum((-torch.log2(v)).sum() for v in likelihoods.values())  # type: ignore[return-value]


def rd_loss(out: dict[str, Any], x: torch.Tensor, lmbda: float) -> tuple[torch.Tensor, dict[str, float]]:
    """lmbda * 255^2 * MSE + bpp (CompressAI's RateDistortionLoss convention). §3.9."""
    npix = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = bits(out["likelihoods"]) / npix
    mse = F.mse_loss(out["x_hat"], x)
    d = {"bpp": float(bpp.detach()), "mse": float(mse.detach()), "psnr": psnr_from_mse(mse.detach())}
    return lmbda * 255 ** 2 * mse + bpp, d


@dataclasses.dataclass
class TrainSpec(Config):
    """How a codec is trained; ours and CompressAI's get the same one in the comparison."""

    steps: int = 8000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "batch", "lr")
        self.check_divisible("crop", STRIDE)
        if self.crop < STRIDE:
            self._fail("crop", f"must be >= {STRIDE}")

    @classmethod
    def tiny(cls) -> "TrainSpec":
        """The shared start: 8,000 steps of eight 128-px crops at ``BASE_LAMBDA`` (one CPU core, ~10 min)."""
        return cls()

    @classmethod
    def finetune(cls) -> "TrainSpec":
        """From the shared start to one rate point: 2,000 more steps at half the learning rate."""
        return cls(steps=2000, lr=1e-3)

    @classmethod
    def base(cls) -> "TrainSpec":
        return cls(steps=50_000, batch=8, crop=256, lr=1e-4)


def train_codec(model: nn.Module, lmbda: float, spec: TrainSpec, ckpt_dir: str | None = None,
                desc: str = "codec", images: torch.Tensor | None = None) -> list[dict[str, float]]:
    """Train any model with CompressAI's output dict and ``aux_loss()`` on random photo crops
    (or on crops of ``images`` (K, 3, H, W), a reader's folder) with :func:`vlmbook.loop.fit`."""
    from ..data import random_crops
    from ..loop import LoopConfig, fit

    def batch_fn(step: int) -> torch.Tensor:
        if images is not None:
            g = step_generator(spec.seed, step, CODEC_SEED_STRIDE)
            k = torch.randint(len(images), (spec.batch,), generator=g)
            ys = torch.randint(images.shape[2] - spec.crop + 1, (spec.batch,), generator=g)
            xs = torch.randint(images.shape[3] - spec.crop + 1, (spec.batch,), generator=g)
            return torch.stack([images[i, :, a:a + spec.crop, b:b + spec.crop] for i, a, b in zip(k, ys, xs)])
        return random_crops(spec.batch, spec.crop, seed=step_seed(spec.seed, step, CODEC_SEED_STRIDE))

    def loss_fn(m: nn.Module, x: torch.Tensor, step: int):
        loss, metrics = rd_loss(m(x), x, lmbda)
        aux = m.aux_loss()
        return loss + aux, {**metrics, "aux": float(aux.detach())}

    cfg = LoopConfig(steps=spec.steps, lr=spec.lr, seed=spec.seed, log_every=max(1, spec.steps // 20), warmup=0)
    return fit(model, loss_fn, batch_fn, cfg, ckpt_dir=ckpt_dir, desc=desc)


#: The four rate points of the chapter (lambda of CompressAI's convention).
LAMBDAS: tuple[float, ...] = (0.0025, 0.005, 0.01, 0.02)
#: The rate point of the shared starting model that every rate point is fine-tuned from.
BASE_LAMBDA = 0.01


def _train_one_thread(model: nn.Module, lmbda: float, spec: TrainSpec, desc: str) -> None:
    from ..device import num_threads

    # one thread: float sums then happen in one order, so a rebuild repeats the committed run
    # bit for bit on the same kind of CPU (thousands of steps amplify any rounding difference)
    with num_threads(1):
        train_codec(model, lmbda, spec, desc=desc)


def build_base(seed: int = 0, spec: TrainSpec | None = None) -> HyperpriorCodec:
    """Artifact ``codec-base``: the tiny scale hyperprior trained at ``BASE_LAMBDA`` (``TrainSpec.tiny``). §3.9."""
    torch.manual_seed(seed)
    model = HyperpriorCodec(CodecConfig.tiny().replace(lmbda=BASE_LAMBDA))
    _train_one_thread(model, BASE_LAMBDA, spec or TrainSpec.tiny().replace(seed=seed), "codec-base")
    model.update()
    return model


def warm_start(base: nn.Module, model: nn.Module) -> nn.Module:
    """Copy ``base``'s weights into ``model`` (same architecture, another lambda); returns ``model``."""
    model.load_state_dict(base.state_dict())
    return model


def build_tiny(quality: int, seed: int = 0, spec: TrainSpec | None = None,
               base: HyperpriorCodec | None = None) -> HyperpriorCodec:
    """Artifact builder: ``codec-base`` fine-tuned to rate point ``quality`` (1..4) on photo crops. §3.9.

    Training every rate point from scratch would cost four times the base run; fine-tuning one
    shared model to each lambda is the usual shortcut (the transforms barely change with rate).
    """
    if not 1 <= quality <= len(LAMBDAS):
        raise ValueError(f"quality must lie in [1, {len(LAMBDAS)}], got {quality}")
    if base is None:
        from ..hub import load_artifact

        base = load_artifact("codec-base", HyperpriorCodec)
    torch.manual_seed(seed)
    model = warm_start(base, HyperpriorCodec(base.config.replace(lmbda=LAMBDAS[quality - 1])))
    _train_one_thread(model, model.config.lmbda, spec or TrainSpec.finetune().replace(seed=seed), f"codec-q{quality}")
    model.update()
    return model


#: Rate points of the mean-scale series (CompressAI's lambda convention), a factor of about 3.2
#: apart, as wide as the tiny codec's fine-tuning can pull them apart (Chapter 3 §3.9).
MS_LAMBDAS: tuple[float, ...] = (0.0002, 0.0006, 0.002, 0.006, 0.02, 0.06, 0.2)
#: Rate point of the mean-scale start that every ``codec-ms-q<k>`` is fine-tuned from.
MS_BASE_LAMBDA = 0.008


def ms_spec(stage: str, seed: int = 0) -> TrainSpec:
    """Training of the mean-scale series, sized for one shared CPU core: ``"base"`` converts
    ``codec-base`` (400 steps of four 128-px crops), ``"q"`` fine-tunes it to one rate point
    (1,000 steps of eight 128-px crops, about 1.5 minutes; the context series of §3.8 gets the
    same). A GPU recipe is :meth:`TrainSpec.base`. §3.9."""
    if stage == "base":
        return TrainSpec(steps=400, batch=4, lr=5e-4, seed=seed)
    if stage == "q":
        return TrainSpec(steps=1000, batch=8, lr=1e-3, seed=seed)
    raise ValueError(f"stage must be 'base' or 'q', got {stage!r}")


def widen(base: HyperpriorCodec, N: int | None = None, M: int | None = None) -> HyperpriorCodec:
    """A mean-scale codec with ``N`` transform and ``M`` latent channels that computes what ``base``
    computes: every trained weight is copied, the new channels' outgoing weights start at zero (so
    nothing downstream sees them: the same reconstruction, the same means and scales), and the new
    latents get a constant scale. Training starts from ``base``'s curve with room to pass it. §3.9."""
    cfg = base.config
    N, M = N or cfg.N, M or cfg.M
    if cfg.model != "meanscale":
        raise ValueError("widen expects a mean-scale codec")
    if N < cfg.N or M < cfg.M or (N, M) == (cfg.N, cfg.M):
        raise ValueError(f"N and M must not shrink and one must grow: base has N={cfg.N}, M={cfg.M}; got N={N}, M={M}")
    model = HyperpriorCodec(cfg.replace(N=N, M=M))
    old, new, modules = base.state_dict(), model.state_dict(), dict(model.named_modules())
    for k, v in new.items():
        o = old[k]
        if o.shape == v.shape:
            new[k] = o.clone()
            continue
        owner, _, pname = k.rpartition(".")
        if pname in ("_cdf", "_cdf_length", "_offset"):
            continue  # CDF tables of a wider bottleneck: rebuilt by update()
        w = v.clone()
        mod = modules[owner]
        if pname == "weight" and isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            cin = 1 if isinstance(mod, nn.Conv2d) else 0  # ConvTranspose2d stores (in, out, k, k)
            w.narrow(cin, o.shape[cin], w.shape[cin] - o.shape[cin]).zero_()
        w[tuple(slice(0, n) for n in o.shape)] = o
        new[k] = w
    if M != cfg.M:  # the mean-scale head's outputs are [means (M) | scales (M)]: the split moves
        m0, n0 = cfg.M, cfg.N
        ow, ob = old["h_s.4.weight"], old["h_s.4.bias"]
        w, b = new["h_s.4.weight"].zero_(), new["h_s.4.bias"].zero_()
        w[:m0, :n0], b[:m0] = ow[:m0], ob[:m0]
        w[M:M + m0, :n0], b[M:M + m0] = ow[m0:], ob[m0:]
        b[M + m0:] = ob[m0:].mean()
    model.load_state_dict(new)
    return model


def meanscale_from(base: HyperpriorCodec) -> HyperpriorCodec:
    """A mean-scale codec initialised from a trained scale hyperprior: same transforms and
    bottleneck; the hyper-synthesis's last layer predicts the scales as before and means of 0."""
    if base.config.model != "hyperprior":
        raise ValueError("meanscale_from expects a scale-only hyperprior")
    model = HyperpriorCodec(base.config.replace(model="meanscale"))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("h_s.4.")}
    model.load_state_dict(state, strict=False)
    last, src = model.h_s[4], base.h_s[4]
    M = base.config.M
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.weight[M:] = src.weight
        last.bias[M:] = src.bias
    return model


def build_ms_base(seed: int = 0, spec: TrainSpec | None = None) -> HyperpriorCodec:
    """Artifact ``codec-ms-base``: ``codec-base`` turned into a mean-scale hyperprior and trained
    at ``MS_BASE_LAMBDA`` (``ms_spec("base")``). §3.9."""
    from ..hub import load_artifact

    torch.manual_seed(seed)
    model = meanscale_from(load_artifact("codec-base", HyperpriorCodec))
    model.config = model.config.replace(lmbda=MS_BASE_LAMBDA)
    _train_one_thread(model, MS_BASE_LAMBDA, spec or ms_spec("base", seed), "codec-ms-base")
    model.update()
    return model


def build_ms(quality: int, seed: int = 0, spec: TrainSpec | None = None,
             base: HyperpriorCodec | None = None) -> HyperpriorCodec:
    """Artifact builder: ``codec-ms-base`` fine-tuned to ``MS_LAMBDAS[quality - 1]``. §3.9."""
    if not 1 <= quality <= len(MS_LAMBDAS):
        raise ValueError(f"quality must lie in [1, {len(MS_LAMBDAS)}], got {quality}")
    if base is None:
        from ..hub import load_artifact

        base = load_artifact("codec-ms-base", HyperpriorCodec)
    torch.manual_seed(seed)
    model = warm_start(base, HyperpriorCodec(base.config.replace(lmbda=MS_LAMBDAS[quality - 1])))
    _train_one_thread(model, model.config.lmbda, spec or ms_spec("q", seed), f"codec-ms-q{quality}")
    model.update()
    return model


def gpu_recipe(quality: int) -> tuple[CodecConfig, TrainSpec]:
    """The ``base`` recipe for one GPU, aiming to beat WebP: the mean-scale hyperprior at the
    ``base`` sizes (N=128, M=192) trained from scratch at ``MS_LAMBDAS[quality - 1]`` for 200,000
    steps of sixteen 256-px crops (CompressAI's schedule scale). Not run for the book. §3.9."""
    if not 1 <= quality <= len(MS_LAMBDAS):
        raise ValueError(f"quality must lie in [1, {len(MS_LAMBDAS)}], got {quality}")
    cfg = CodecConfig.base().replace(model="meanscale", lmbda=MS_LAMBDAS[quality - 1])
    return cfg, TrainSpec.base().replace(steps=200_000, batch=16)


def build_gpu(quality: int, seed: int = 0, spec: TrainSpec | None = None,
              ckpt_dir: str | None = None) -> HyperpriorCodec:
    """Train :func:`gpu_recipe` (``spec`` overrides it, e.g. for a smoke test); resumable from ``ckpt_dir``."""
    cfg, recipe = gpu_recipe(quality)
    torch.manual_seed(seed)
    model = HyperpriorCodec(cfg)
    train_codec(model, cfg.lmbda, spec or recipe.replace(seed=seed), ckpt_dir=ckpt_dir, desc=f"gpu-ms-q{quality}")
    model.update()
    return model


def quality_builders(namespace: dict, build: Callable[[int, int], nn.Module], kind: str,
                     lambdas: Sequence[float] = MS_LAMBDAS) -> None:
    """Define ``build_<kind>_q1`` … ``build_<kind>_q<len(lambdas)>`` in ``namespace``: artifact
    ``codec-<kind>-qN`` is ``build(N, seed)`` (the artifact registry names one function per artifact). §3.6."""
    def one(q: int):
        def builder(seed: int = 0) -> nn.Module:
            return build(q, seed)

        builder.__name__ = builder.__qualname__ = f"build_{kind}_q{q}"
        builder.__doc__ = f"Artifact ``codec-{kind}-q{q}`` (lambda = {lambdas[q - 1]})."
        return builder

    for q in range(1, len(lambdas) + 1):
        namespace[f"build_{kind}_q{q}"] = one(q)


quality_builders(globals(), build_ms, "ms")

#: Rate points above the tiny mean-scale series' ceiling for the widened codecs ``codec-msw-q<k>``,
#: continuing ``MS_LAMBDAS``' factor of about 3.2 (§3.9). One is enough: trained the same way at
#: lambda = 2 the widened codec spent 3 % more bits for 0.05 dB less (measured once, not kept).
MSW_LAMBDAS: tuple[float, ...] = (0.6,)
#: Latent channels of the widened codecs: three times the tiny codec's.
MSW_M = 96


def build_msw(quality: int, seed: int = 0, spec: TrainSpec | None = None,
              base: HyperpriorCodec | None = None) -> HyperpriorCodec:
    """Artifact builder: the top of the mean-scale series (``codec-ms-q7``) widened to ``MSW_M``
    latent channels (:func:`widen`) and trained at ``MSW_LAMBDAS[quality - 1]`` for
    ``ms_spec("q")``, as every other rate point. §3.9."""
    if not 1 <= quality <= len(MSW_LAMBDAS):
        raise ValueError(f"quality must lie in [1, {len(MSW_LAMBDAS)}], got {quality}")
    if base is None:
        from ..hub import load_artifact

        base = load_artifact(f"codec-ms-q{len(MS_LAMBDAS)}", HyperpriorCodec)
    torch.manual_seed(seed)  # draws the new channels' analysis filters
    model = widen(base, M=MSW_M)
    model.config = model.config.replace(lmbda=MSW_LAMBDAS[quality - 1])
    _train_one_thread(model, model.config.lmbda, spec or ms_spec("q", seed), f"codec-msw-q{quality}")
    model.update()
    return model


quality_builders(globals(), build_msw, "msw", MSW_LAMBDAS)


def pad_to(x: torch.Tensor, multiple: int = STRIDE) -> torch.Tensor:
    """Replicate-pad (B, C, H, W) on the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def build_q1(seed: int = 0) -> HyperpriorCodec:
    """Artifact ``codec-q1`` (lowest rate)."""
    return build_tiny(1, seed)


def build_q2(seed: int = 0) -> HyperpriorCodec:
    """Artifact ``codec-q2``."""
    return build_tiny(2, seed)


def build_q3(seed: int = 0) -> HyperpriorCodec:
    """Artifact ``codec-q3``."""
    return build_tiny(3, seed)


def build_q4(seed: int = 0) -> HyperpriorCodec:
    """Artifact ``codec-q4`` (highest rate)."""
    return build_tiny(4, seed)


@torch.no_grad()
def float_decode_mismatch(model: HyperpriorCodec, x: torch.Tensor, rel_noise: float = 1e-6,
                          seed: int = 0) -> dict[str, Any]:
    """What goes wrong without the integer hyper-synthesis, and that the remedy holds (Chapter 3 §3.7).

    The encoder codes y with table indexes from the *float* scales; a "second machine" computes
    the same scales with relative errors of ``rel_noise`` (as a GPU kernel or another BLAS may)
    and decodes with its own indexes. Returns how close the nearest scale sits to a table
    boundary (relative), how many indexes differ, whether the decoder raised (and why), how many
    decoded symbols are wrong when it did not, and the PSNR of both decodes (None when the second
    machine got no picture). Then the remedy: the integer hyper-synthesis run with the channels
    summed in another order (``reordered_*``) gives identical indexes, and its stream decodes.
    """
    from . import fastcoder
    from .integer import IntegerSynthesis, scale_indexes

    if model.config.model != "hyperprior":
        raise ValueError("the demonstration uses the scale-only hyperprior")
    x = pad_to(x)
    y = model.g_a(x)
    med = model.entropy_bottleneck.medians().view(1, -1, 1, 1)
    z_hat = torch.round(model.h_a(y.abs()) - med) + med
    scales = model.h_s(z_hat)
    g = torch.Generator().manual_seed(seed)
    other = scales * (1 + rel_noise * torch.randn(scales.shape, generator=g, dtype=scales.dtype))
    gc = model.gaussian_conditional
    table = gc.scale_table.double()
    s = scales.double().clamp_min(gc.scale_bound).reshape(-1)
    inside = (s > table[0]) & (s < table[-1])  # scales clamped to the table's ends cannot flip
    nearest = ((s[:, None] - table[None]).abs() / s[:, None]).min(dim=1).values
    idx_a, idx_b = gc.build_indexes(scales), gc.build_indexes(other)
    vals = torch.round(y).long().numpy().reshape(-1)
    stream = fastcoder.encode(vals, idx_a.numpy().reshape(-1), gc.tables())
    error, dec = None, None
    try:
        dec = fastcoder.decode(stream, idx_b.numpy().reshape(-1), gc.tables())
    except BitstreamError as e:
        error = str(e)
    changed = (idx_a != idx_b).reshape(-1)
    first = int(torch.nonzero(changed)[0]) if bool(changed.any()) else None
    # the remedy: integer hyper-synthesis, channels summed in the opposite order on "machine B"
    ints = IntegerSynthesis(model.h_s)
    rev = IntegerSynthesis(model.h_s)
    kind, w, b, st, pad = rev.layers[0]
    rev.layers[0] = (kind, np.ascontiguousarray(w[:, ::-1]), b, st, pad)
    table_np = table.numpy()
    i_a = scale_indexes(ints(z_hat), table_np, gc.scale_bound)
    i_b = scale_indexes(rev(z_hat.flip(1)), table_np, gc.scale_bound)
    fl_b = model.h_s[1:](F.conv_transpose2d(z_hat.flip(1), model.h_s[0].weight.flip(0), model.h_s[0].bias,
                                            stride=2, padding=2, output_padding=1))
    int_stream = fastcoder.encode(vals, i_a.reshape(-1), gc.tables())
    int_ok = bool(np.array_equal(fastcoder.decode(int_stream, i_b.reshape(-1), gc.tables()), vals))
    return {
        "symbols": int(vals.size),
        "nearest_boundary_relative": float(nearest[inside].min()) if bool(inside.any()) else float("nan"),
        "indexes_changed": int(changed.sum()),
        "first_changed_position": first,
        "decode_raised": error is not None,
        "decode_error": error,
        "wrong_symbols": None if dec is None else int((dec != vals).sum()),
        "psnr_same_machine": psnr(model.g_s(torch.round(y)).clamp(0, 1), x),
        "psnr_other_machine": None if dec is None else psnr(
            model.g_s(torch.from_numpy(dec.astype(np.float32).reshape(y.shape))).clamp(0, 1), x),
        "reordered_float_max_relative_difference": float(((fl_b - scales).abs() / scales.abs().clamp_min(1e-6)).max()),
        "reordered_integer_indexes_changed": int((i_a != i_b).sum()),
        "reordered_integer_decode_exact": int_ok,
    }
