"""VQ-GAN losses: PatchGAN discriminator, hinge loss, adaptive weight, and a perceptual loss on
a feature network the book trains itself on museum data (Chapter 2 §2.7; Esser et al., 2021).

No downloaded VGG: :class:`FeatureNet` is a small CNN trained to recognise which shapes and
colours an exhibit contains; its intermediate feature maps define :class:`PerceptualLoss`.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..hub import ArtifactSpec, PretrainedMixin, register_artifact
from ..loop import LoopConfig, Stage, fit
from ..device import num_threads
from .tokenizer import TRAIN_THREADS, VQTokenizer, training_batch


# ---------------------------------------------------------------------------------------
# The discriminator and the adversarial losses
# ---------------------------------------------------------------------------------------
class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, 3, H, W) -> (B, 1, H/2^(layers), W/2^(layers)) real/fake logits, one per
    overlapping patch. Chapter 2 §2.7 (Isola et al., 2017)."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        if channels < 1 or layers < 1:
            raise ValueError(f"PatchDiscriminator needs channels >= 1 and layers >= 1, got {channels}, {layers}")
        mods: list[nn.Module] = []
        c_in, c = 3, channels
        for i in range(layers):
            mods += [nn.Conv2d(c_in, c, 4, stride=2, padding=1)]
            if i:
                mods += [nn.GroupNorm(8 if c % 8 == 0 else 1, c)]
            mods += [nn.LeakyReLU(0.2)]
            c_in, c = c, min(c * 2, 256)
        mods += [nn.Conv2d(c_in, 1, 3, padding=1)]
        self.net = nn.Sequential(*mods)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"discriminator input must be (B, 3, H, W), got {tuple(images.shape)}")
        return self.net(images * 2 - 1)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean relu(1 - D(x)) + mean relu(1 + D(x̂)). §2.7."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge game: -mean D(x̂). §2.7."""
    return -fake_logits.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """λ = ‖∇_L rec‖ / (‖∇_L g‖ + δ) at the decoder's last layer L, detached. §2.7 (Esser et al., 2021)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + delta)).clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------------------------------
# The book's own feature network and the perceptual loss built on it
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class FeatureNetConfig(Config):
    """A small CNN whose stages give the perceptual loss its features."""

    widths: tuple = (16, 32, 64, 64)
    cells: int = 3

    def validate(self) -> None:
        super().validate()
        w = tuple(self.widths)
        if not w or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in w):
            self._fail("widths", "must be a non-empty tuple of positive ints")
        self.check_positive("cells")

    @classmethod
    def tiny(cls) -> "FeatureNetConfig":
        return cls()

    @classmethod
    def base(cls) -> "FeatureNetConfig":
        return cls(widths=(32, 64, 128, 128))


#: Classes per grid cell: 8 colours or "empty", and 8 shapes or "empty".
N_COLOUR, N_SHAPE = 9, 9


class FeatureNet(nn.Module, PretrainedMixin):
    """Museum recogniser: for each cell of the 3 × 3 exhibit grid, which colour and which shape
    (or nothing) is there; ``features`` gives one map per stage. Chapter 2 §2.7."""

    config_class = FeatureNetConfig

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        stages, c_in = [], 3
        for i, w in enumerate(config.widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(nn.Conv2d(c_in, w, 3 if i == 0 else 4, stride=stride, padding=1), nn.SiLU(),
                                        nn.Conv2d(w, w, 3, padding=1), nn.SiLU()))
            c_in = w
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, N_COLOUR + N_SHAPE)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> list of (B, C_i, H_i, W_i) stage outputs. §2.7."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"FeatureNet input must be (B, 3, H, W), got {tuple(images.shape)}")
        x, out = images * 2 - 1, []
        for st in self.stages:
            x = st(x)
            out.append(x)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, cells², 18) logits: 9 colour classes then 9 shape classes per cell."""
        f = F.adaptive_avg_pool2d(self.features(images)[-1], self.config.cells)
        return self.head(f.flatten(2).transpose(1, 2))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C) pooled last-stage features (for Fréchet distances). §2.8."""
        return self.features(images)[-1].mean((2, 3))


def museum_labels(start: int, n: int, split: str = "train", seed: int = 0) -> torch.Tensor:
    """(n, 9, 2) long labels per grid cell: colour index and shape index, 8 meaning empty. §2.7."""
    from ..data import COLOUR_NAMES, SHAPES, generate_scene

    y = torch.full((n, 9, 2), 8, dtype=torch.long)
    for r, i in enumerate(range(start, start + n)):
        for o in generate_scene(split, i, seed).objects:
            y[r, o.cell, 0] = COLOUR_NAMES.index(o.colour)
            y[r, o.cell, 1] = SHAPES.index(o.shape)
    return y


def _cell_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lc, ls = logits[..., :N_COLOUR], logits[..., N_COLOUR:]
    loss = F.cross_entropy(lc.reshape(-1, N_COLOUR), y[..., 0].reshape(-1)) + \
        F.cross_entropy(ls.reshape(-1, N_SHAPE), y[..., 1].reshape(-1))
    acc = ((lc.argmax(-1) == y[..., 0]).float().mean() + (ls.argmax(-1) == y[..., 1]).float().mean()) / 2
    return loss, acc


def train_feature_net(model: FeatureNet, steps: int = 300, batch_size: int = 32, seed: int = 0,
                      size: int = 64, progress: bool = True) -> list[dict[str, float]]:
    """Per-cell colour and shape classification on museum exhibits with :func:`vlmbook.loop.fit`. §2.7."""
    from ..data import Museum

    museum = Museum("train", size, length=2**39)

    def batch_fn(step: int):
        return museum.tensors(step * batch_size, batch_size), museum_labels(step * batch_size, batch_size)

    def loss_fn(m: FeatureNet, batch, step: int):
        x, y = batch
        loss, acc = _cell_loss(m(x), y)
        return loss, {"acc": float(acc)}

    cfg = LoopConfig(steps=steps, lr=3e-3, seed=seed, log_every=max(1, steps // 10), warmup=steps // 10,
                     progress=progress)
    return fit(model, loss_fn, batch_fn, cfg, desc="feature-net")


@torch.no_grad()
def feature_net_accuracy(model: FeatureNet, n: int = 256, size: int = 64) -> float:
    """Mean per-cell colour and shape accuracy on ``n`` held-out (val) exhibits. §2.7."""
    from ..data import Museum

    x = Museum("val", size).tensors(0, n)
    model.eval()
    return float(_cell_loss(model(x), museum_labels(0, n, split="val"))[1])


def empty_cell_baseline(n: int = 256) -> float:
    """Accuracy of always answering "empty" on the same held-out exhibits. §2.7."""
    return float((museum_labels(0, n, split="val") == 8).float().mean())


def build_feature_net(seed: int = 0) -> FeatureNet:
    """The ``vq-features-tiny`` artifact: FeatureNet trained 300 steps on museum exhibits. §2.7."""
    torch.manual_seed(seed)
    model = FeatureNet(FeatureNetConfig.tiny())
    with num_threads(TRAIN_THREADS):
        train_feature_net(model, steps=300, seed=seed, progress=False)
    return model.eval()


FEATURES_ARTIFACT = register_artifact(ArtifactSpec(
    "vq-features-tiny", "1", "vlmbook.vq.vqgan:build_feature_net", seed=0,
    description="FeatureNet for the perceptual loss, trained on museum exhibits (Chapter 2)"))


def load_feature_net(rebuild: bool = False) -> FeatureNet:
    """The ``vq-features-tiny`` artifact (committed copy, else cache, else rebuilt)."""
    from ..hub import load_artifact

    return load_artifact("vq-features-tiny", FeatureNet, rebuild=rebuild).eval()


class PerceptualLoss(nn.Module):
    """Σ_stages mean ‖n(φ_s(x)) − n(φ_s(y))‖² with channel-normalised features of a frozen
    :class:`FeatureNet` (LPIPS-style, no learned weights). §2.7 (Zhang et al., 2018)."""

    def __init__(self, net: FeatureNet):
        super().__init__()
        self.net = copy.deepcopy(net).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.net.eval()  # the feature network stays frozen
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"perceptual loss needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
        total = x.new_zeros(())
        for fx, fy in zip(self.net.features(x), self.net.features(y)):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-8)
            total = total + (fx - fy).pow(2).sum(1).mean()
        return total


# ---------------------------------------------------------------------------------------
# Training a tokenizer with the VQ-GAN objective
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class VQGANConfig(Config):
    """Weights and schedule of the VQ-GAN objective (0 weights give plain MSE training)."""

    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    perceptual_weight: float = 1.0
    disc_weight: float = 0.5
    disc_start: int = 0
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "batch_size", "lr")
        self.check_non_negative("perceptual_weight", "disc_weight", "disc_start", "seed")

    @classmethod
    def tiny(cls) -> "VQGANConfig":
        return cls()

    @classmethod
    def base(cls) -> "VQGANConfig":
        return cls(steps=5000, batch_size=32, lr=2e-4, disc_start=1000)

    def loop(self, progress: bool = True) -> LoopConfig:
        """The :class:`LoopConfig` this recipe trains with."""
        return LoopConfig(steps=self.steps, lr=self.lr, seed=self.seed, log_every=max(1, self.steps // 10),
                          progress=progress)


class VQGAN(nn.Module):
    """A tokenizer, its discriminator and a frozen perceptual loss, trained as one module. §2.7."""

    def __init__(self, tokenizer: VQTokenizer, disc: PatchDiscriminator, perceptual: PerceptualLoss | None):
        super().__init__()
        self.tokenizer, self.disc, self.perceptual = tokenizer, disc, perceptual


def generator_loss(model: VQGAN, batch: torch.Tensor, step: int,
                   cfg: VQGANConfig) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The tokenizer's objective MSE + w_p·perceptual + quantiser loss + λ·w_d·hinge_G on (B, 3, H, W)
    images; returns ``(loss, metrics, reconstruction)``. §2.7 (Esser et al., 2021)."""
    out = model.tokenizer(batch)
    rec = out.reconstruction
    rec_loss = out.mse
    if cfg.perceptual_weight > 0 and model.perceptual is not None:
        rec_loss = rec_loss + cfg.perceptual_weight * model.perceptual(rec, batch)
    loss = rec_loss + out.quant.loss
    metrics = {"mse": float(out.mse.detach())}
    if cfg.disc_weight > 0 and step >= cfg.disc_start:
        # the hinge_G gradient also lands on the discriminator's weights; only the tokenizer's
        # optimiser steps on this loss, and loop.fit clears those gradients before the next stage
        g = hinge_g_loss(model.disc(rec))
        lam = adaptive_weight(rec_loss, g, model.tokenizer.last_layer)
        loss = loss + cfg.disc_weight * lam * g
        metrics.update(g=float(g.detach()), lam=float(lam))
    return loss, metrics, rec


def discriminator_loss(model: VQGAN, batch: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """hinge_D of real (B, 3, H, W) images against detached reconstructions; metrics: mean logits. §2.7."""
    real, fake = model.disc(batch), model.disc(rec.detach())
    return hinge_d_loss(real, fake), {"real": float(real.detach().mean()), "fake": float(fake.detach().mean())}


def vqgan_stages(model: VQGAN, cfg: VQGANConfig) -> list[Stage]:
    """The VQ-GAN game as two :class:`vlmbook.loop.Stage` s, one optimiser each: the tokenizer
    (generator) on :func:`generator_loss`, then the discriminator on :func:`discriminator_loss` of
    the same batch and the reconstructions the generator just made. §2.7."""
    train_disc = cfg.disc_weight > 0
    recs: dict[tuple[int, int], torch.Tensor] = {}  # (step, batch) -> reconstruction, handed from G to D

    def g_step(m: VQGAN, batch: torch.Tensor, step: int):
        loss, metrics, rec = generator_loss(m, batch, step, cfg)
        if train_disc and step >= cfg.disc_start:
            recs[step, id(batch)] = rec.detach()
        return loss, metrics

    def d_step(m: VQGAN, batch: torch.Tensor, step: int):
        rec = recs.pop((step, id(batch)), None)
        if rec is None:  # the generator did not see this batch: reconstruct it without gradients
            with torch.no_grad():
                rec = m.tokenizer(batch).reconstruction
        return discriminator_loss(m, batch, rec)

    stages = [Stage("generator", g_step, model.tokenizer.parameters())]
    if train_disc:
        stages.append(Stage("discriminator", d_step, model.disc.parameters(), start=cfg.disc_start))
    return stages


def train_vqgan(model: VQGAN, cfg: VQGANConfig | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Fine-tune or train ``model.tokenizer`` against ``model.disc`` with :func:`vlmbook.loop.fit`
    (generator and discriminator stages; history keys ``generator/…``, ``discriminator/…``). §2.7."""
    cfg = cfg or VQGANConfig()
    size = model.tokenizer.config.image_size
    return fit(model, vqgan_stages(model, cfg),
               lambda s: training_batch(s + 10_000_000, cfg.batch_size, size, 0.25, cfg.seed), cfg.loop(progress), desc="vqgan")


def sharpness(images: torch.Tensor) -> float:
    """Mean absolute horizontal + vertical pixel difference of (B, 3, H, W) images (edge energy). §2.7."""
    if images.dim() != 4:
        raise ValueError(f"sharpness needs (B, C, H, W) images, got {tuple(images.shape)}")
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return float(dx + dy)


@torch.no_grad()
def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (n, C) feature sets (FID's formula). §2.8."""
    from ..rd.metrics import frechet_distance as gaussian_frechet

    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs (n, C) and (m, C) with n, m >= 2, got {tuple(a.shape)}, {tuple(b.shape)}")
    a64, b64 = a.double().numpy(), b.double().numpy()
    return gaussian_frechet(a64.mean(0), np.cov(a64, rowvar=False), b64.mean(0), np.cov(b64, rowvar=False))
