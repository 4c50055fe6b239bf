"""The book's image tokenizer: a VQ-VAE that maps images to a grid of integer codes (Chapter 2 §2.6).

``encode(images (B, 3, H, W) in [0, 1]) -> (B, h, w)`` long codes and ``decode(codes) -> images``.
The ``tiny`` preset (64 px → 8 × 8 codes, K = 512) trains on CPU on museum exhibits and photo
crops and is the artifact ``vq-tokenizer-tiny`` that Chapter 5 turns into ``<v_k>`` tokens.
The committed copy (``vlmbook/artifacts/vq-tokenizer-tiny-v1/``) is rebuilt by
``vlmbook artifacts build vq-tokenizer-tiny --out vlmbook/artifacts/vq-tokenizer-tiny-v1``; its
``metrics.json`` records :func:`evaluate_tokenizer` of the committed weights.

Chapter 5's discrete route uses a second preset whose code grid is the museum's 3 × 3 cells
(48 px → 3 × 3 codes, K = 256, one code per exhibit cell): the artifact ``vq-tokenizer-cell``,
rebuilt by ``vlmbook artifacts build vq-tokenizer-cell --out vlmbook/artifacts/vq-tokenizer-cell-v1``.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..device import num_threads
from ..hub import ArtifactSpec, PretrainedMixin, register_artifact
from ..loop import LoopConfig, fit
from ..rd.metrics import psnr, psnr_from_mse
from ..util import step_seed
from .quantizers import KINDS, QuantizerConfig, QuantizerOutput, make_quantizer


@dataclasses.dataclass
class TokenizerConfig(Config):
    """VQ-VAE shape and its quantiser (flat fields so the config round-trips through JSON)."""

    image_size: int = 64
    channels: int = 64
    downsample: int = 3
    res_blocks: int = 1
    code_dim: int = 16
    quantizer: str = "vq"
    codebook_size: int = 256
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.9
    restart_threshold: float = 1.0
    kmeans_init: bool = True
    levels: tuple = (8, 5, 5, 5)
    depth: int = 2
    groups: int = 2

    def validate(self) -> None:
        super().validate()
        for name in ("image_size", "channels", "downsample", "res_blocks", "code_dim", "codebook_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                self._fail(name, "must be an int")
        self.check_positive("image_size", "channels", "downsample", "code_dim", "codebook_size")
        if self.res_blocks < 0:
            self._fail("res_blocks", "must be >= 0")
        self.check_range("downsample", 1, 6)
        self.check_divisible("image_size", 2 ** self.downsample, "2**downsample")
        self.check_choice("quantizer", KINDS)
        self.quantizer_config()  # validates the quantiser fields too

    def quantizer_config(self) -> QuantizerConfig:
        """The :class:`QuantizerConfig` these fields describe."""
        return QuantizerConfig(kind=self.quantizer, dim=self.code_dim, codebook_size=self.codebook_size,
                               beta=self.beta, ema=self.ema, decay=self.decay,
                               restart_threshold=self.restart_threshold, kmeans_init=self.kmeans_init,
                               levels=tuple(self.levels), depth=self.depth, groups=self.groups)

    @property
    def widths(self) -> list[int]:
        """Channels after each downsampling stage (``channels`` at the code grid, halving outwards)."""
        return [max(16, self.channels >> (self.downsample - 1 - i)) for i in range(self.downsample)]

    @property
    def grid(self) -> int:
        """Codes per image side."""
        return self.image_size // 2 ** self.downsample

    @classmethod
    def tiny(cls) -> "TokenizerConfig":
        return cls(codebook_size=512)

    @classmethod
    def base(cls) -> "TokenizerConfig":
        return cls(image_size=128, channels=128, downsample=3, res_blocks=2, code_dim=32, codebook_size=1024)


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))) at fixed width."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@dataclasses.dataclass
class TokenizerOutput:
    """A forward pass: reconstruction, the quantiser's output, and the loss terms."""

    reconstruction: torch.Tensor
    quant: QuantizerOutput
    mse: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.mse + self.quant.loss


class VQTokenizer(nn.Module, PretrainedMixin):
    """VQ-VAE: conv encoder (stride 2^downsample) → quantiser → conv decoder. Chapter 2 §2.6."""

    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise ValueError(f"VQTokenizer needs a TokenizerConfig, got {type(config).__name__}")
        self.config = config
        widths = config.widths
        enc: list[nn.Module] = []
        c_in = 3
        for w in widths:  # each stage halves the resolution
            enc += [nn.Conv2d(c_in, w, 4, stride=2, padding=1), nn.SiLU()]
            c_in = w
        c = widths[-1]
        enc += [ResBlock(c) for _ in range(config.res_blocks)] + [nn.SiLU(), nn.Conv2d(c, config.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = make_quantizer(config.quantizer_config())
        dec: list[nn.Module] = [nn.Conv2d(config.code_dim, c, 3, padding=1)]
        dec += [ResBlock(c) for _ in range(config.res_blocks)]
        outs = list(reversed(widths[:-1])) + [widths[0]]
        for w in outs:  # each stage doubles the resolution
            dec += [nn.SiLU(), nn.ConvTranspose2d(c, w, 4, stride=2, padding=1)]
            c = w
        dec += [nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def codebook_size(self) -> int:
        """K: the number of distinct codes (the ``<v_k>`` vocabulary size in Chapter 5)."""
        return self.quantizer.codebook_size

    @property
    def grid(self) -> int:
        """Codes per side for ``config.image_size`` inputs."""
        return self.config.grid

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's final weight (the VQ-GAN adaptive weight differentiates through it)."""
        return self.decoder[-1].weight

    def _check_images(self, images: torch.Tensor) -> None:
        f = 2 ** self.config.downsample
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"image height and width must be multiples of {f}, got {tuple(images.shape[2:])}")
        if not images.is_floating_point():
            raise ValueError("images must be floating point in [0, 1]")

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, code_dim, H/f, W/f) continuous latents. §2.6."""
        self._check_images(images)
        return self.encoder(images * 2 - 1)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, code_dim, h, w) -> (B, 3, h·f, w·f) images (unclamped). §2.6."""
        return self.decoder(z) * 0.5 + 0.5

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """(B, 3, H, W) -> reconstruction, quantiser output, MSE. §2.6."""
        q = self.quantizer(self.encode_latents(images))
        rec = self.decode_latents(q.quantized)
        return TokenizerOutput(rec, q, F.mse_loss(rec, images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, h, w) long codes (``(B, h, w, L)`` for multi-code quantisers). §2.6."""
        was = self.training
        self.eval()
        try:
            return self.quantizer(self.encode_latents(images)).codes
        finally:
            self.train(was)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) codes -> (B, 3, h·f, w·f) images in [0, 1]. §2.6."""
        multi = self.quantizer.codes_per_vector > 1
        if not isinstance(codes, torch.Tensor) or codes.dim() != (4 if multi else 3):
            raise ValueError(f"codes must be a (B, h, w{', L' if multi else ''}) integer tensor, "
                             f"got {tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}")
        was = self.training
        self.eval()
        try:
            z = self.quantizer.lookup(codes).permute(0, 3, 1, 2)
            return self.decode_latents(z).clamp(0, 1)
        finally:
            self.train(was)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> decode(encode(images)). §2.6."""
        return self.decode(self.encode(images))


# ---------------------------------------------------------------------------------------
# Data, metrics, training
# ---------------------------------------------------------------------------------------
def training_batch(step: int, batch_size: int, size: int = 64, photo_fraction: float = 0.25, seed: int = 0) -> torch.Tensor:
    """(batch_size, 3, size, size) images for step ``step``: museum exhibits plus photo crops. §2.6."""
    from ..data import Museum, random_crops

    if batch_size < 1 or not 0 <= photo_fraction <= 1:
        raise ValueError(f"need batch_size >= 1 and photo_fraction in [0, 1], got {batch_size}, {photo_fraction}")
    n_photo = int(round(batch_size * photo_fraction))
    n_museum = batch_size - n_photo
    parts = []
    if n_museum:
        parts.append(Museum("train", size, seed=seed, length=2**39).tensors(step * n_museum, n_museum))
    if n_photo:
        parts.append(random_crops(n_photo, size, seed=step_seed(seed, step)))
    return torch.cat(parts)


def eval_images(n: int = 64, size: int = 64) -> torch.Tensor:
    """(n, 3, size, size) held-out museum exhibits (the ``val`` split). §2.6."""
    from ..data import Museum

    return Museum("val", size).tensors(0, n)


@dataclasses.dataclass
class TokenizerTrainConfig(Config):
    """How a tokenizer is trained: steps, batch, learning rate, photo share."""

    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    photo_fraction: float = 0.25
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "batch_size", "lr")
        self.check_range("photo_fraction", 0.0, 1.0)
        if self.seed < 0:
            self._fail("seed", "must be >= 0")

    @classmethod
    def tiny(cls) -> "TokenizerTrainConfig":
        return cls()

    @classmethod
    def base(cls) -> "TokenizerTrainConfig":
        return cls(steps=6000, batch_size=64, lr=1e-3)

    def loop(self, progress: bool = True) -> LoopConfig:
        """The :class:`LoopConfig` this recipe trains with."""
        return LoopConfig(steps=self.steps, lr=self.lr, seed=self.seed, log_every=max(1, self.steps // 20),
                          warmup=min(50, self.steps // 10), progress=progress)


def tokenizer_loss(model: VQTokenizer, batch: torch.Tensor, step: int):
    """The VQ-VAE objective: MSE + quantiser loss; logs PSNR and usage. §2.6."""
    out = model(batch)
    return out.loss, {"psnr": psnr_from_mse(out.mse.detach()), "perplexity": float(out.quant.perplexity),
                      "used": float(out.quant.used_fraction)}


def train_tokenizer(model: VQTokenizer, cfg: TokenizerTrainConfig | None = None, ckpt_dir=None,
                    device=None, progress: bool = True) -> list[dict[str, float]]:
    """Train with :func:`vlmbook.loop.fit` on museum + photo batches; returns the history. §2.6."""
    cfg = cfg or TokenizerTrainConfig()
    size = model.config.image_size
    return fit(model, tokenizer_loss, lambda s: training_batch(s, cfg.batch_size, size, cfg.photo_fraction, cfg.seed),
               cfg.loop(progress), ckpt_dir=ckpt_dir, device=device, desc="vq-tokenizer")


@torch.no_grad()
def evaluate_tokenizer(model: VQTokenizer, images: torch.Tensor | None = None, batch: int = 64) -> dict[str, float]:
    """PSNR, codebook usage and perplexity of ``model`` over ``images`` (default: 256 val exhibits). §2.6."""
    from .quantizers import codebook_usage

    images = eval_images(256, model.config.image_size) if images is None else images
    model.eval()
    recs, codes = [], []
    for i in range(0, len(images), batch):
        c = model.encode(images[i:i + batch])
        codes.append(c)
        recs.append(model.decode(c))
    codes_t = torch.cat(codes)
    if codes_t.dim() == 4:  # multi-code: statistics of the first stage/group
        codes_t = codes_t[..., 0]
    ppl, used = codebook_usage(codes_t, model.codebook_size)
    return {"psnr": round(psnr(torch.cat(recs), images), 3), "usage": round(float(used), 4),
            "perplexity": round(float(ppl), 2), "tokens_per_image": int(codes_t[0].numel())}


#: Threads for tokenizer training. Float sums depend on the thread count, so it is fixed; the
#: committed ``vq-tokenizer-tiny`` artifact and Chapter 2's numbers were made with 2.
TRAIN_THREADS = 2

#: The training recipe of the ``vq-tokenizer-tiny`` artifact.
TINY_TRAIN = TokenizerTrainConfig(steps=1200, batch_size=32, lr=2e-3, photo_fraction=0.125)


def build_tiny_tokenizer(seed: int = 0, steps: int | None = None) -> VQTokenizer:
    """Train the ``tiny`` tokenizer (64 px → 8 × 8 codes, K = 512) from scratch with ``seed``. §2.6."""
    torch.manual_seed(seed)
    model = VQTokenizer(TokenizerConfig.tiny())
    cfg = TINY_TRAIN.replace(seed=seed, **({"steps": steps} if steps else {}))
    with num_threads(TRAIN_THREADS):
        train_tokenizer(model, cfg, progress=False)
    return model.eval()


TINY_ARTIFACT = register_artifact(ArtifactSpec(
    "vq-tokenizer-tiny", "1", "vlmbook.vq.tokenizer:build_tiny_tokenizer", seed=0,
    description="VQ-VAE, 64 px -> 8x8 codes, K=512, EMA + restart (Chapter 2)"))


def load_tiny_tokenizer(rebuild: bool = False) -> VQTokenizer:
    """The ``vq-tokenizer-tiny`` artifact: committed copy, else cache, else rebuilt (Chapter 5 uses it)."""
    from ..hub import load_artifact

    return load_artifact("vq-tokenizer-tiny", VQTokenizer, rebuild=rebuild).eval()


# ---------------------------------------------------------------------------------------
# The museum-cell tokenizer: one code per exhibit cell (Chapter 5's discrete route)
# ---------------------------------------------------------------------------------------
#: 48-px exhibits, four stride-2 stages: a 3 × 3 code grid, so code k covers exactly museum cell k
#: (16 px) and the guide reads M = 9 ``<v_k>`` tokens. K = 256 leaves room for the 8 × 8 × 3
#: colour-shape-size objects plus empty walls. Measured alternatives in the same CPU budget read
#: the cells' objects no better: K = 512 (72 % of it used), and 96 px through five stages (fewer
#: steps fit; shape read from the code fell from 25 % to 19 %).
CELL_CONFIG = TokenizerConfig(image_size=48, downsample=4, channels=64, res_blocks=1, code_dim=16,
                              codebook_size=256)

#: The training recipe of the ``vq-tokenizer-cell`` artifact: museum exhibits only (the guide never
#: sees photos), on one thread (Float sums depend on the thread count).
CELL_TRAIN = TokenizerTrainConfig(steps=2400, batch_size=32, lr=2e-3, photo_fraction=0.0)
CELL_THREADS = 1


def build_cell_tokenizer(seed: int = 0, steps: int | None = None) -> VQTokenizer:
    """Train the museum-cell tokenizer (48 px → 3 × 3 codes, K = 256) from scratch with ``seed``. §2.6."""
    return build_grid_tokenizer(9, seed, steps)


CELL_ARTIFACT = register_artifact(ArtifactSpec(
    "vq-tokenizer-cell", "1", "vlmbook.vq.tokenizer:build_cell_tokenizer", seed=0,
    description="VQ-VAE, 48 px -> 3x3 codes (one per museum cell), K=256, EMA + restart (Chapters 2, 5)"))


#: Museum tokenizers for Chapter 7's token sweep of the discrete route: M codes per exhibit from a
#: √M × √M code grid, the cell recipe otherwise (K = 256, museum exhibits only, one thread). A 3 × 3
#: grid needs 48 px (16-px cells); 1, 4 and 16 codes divide 64 px, as Chapter 4's encoder reads them.
TOKEN_GRID_CONFIGS: dict[int, TokenizerConfig] = {
    1: CELL_CONFIG.replace(image_size=64, downsample=6), 4: CELL_CONFIG.replace(image_size=64, downsample=5),
    9: CELL_CONFIG, 16: CELL_CONFIG.replace(image_size=64, downsample=4)}
#: Image tokens M -> the artifact of that code grid (M = 9 is ``vq-tokenizer-cell``).
TOKEN_ARTIFACTS: dict[int, str] = {1: "vq-tokenizer-m1", 4: "vq-tokenizer-m4", 9: "vq-tokenizer-cell",
                                   16: "vq-tokenizer-m16"}


def build_grid_tokenizer(tokens: int, seed: int = 0, steps: int | None = None) -> VQTokenizer:
    """Train the museum tokenizer with ``tokens`` codes per exhibit (1, 4, 9 or 16) from scratch with
    ``seed``, on the cell recipe. Chapter 7 §7.4."""
    if tokens not in TOKEN_GRID_CONFIGS:
        raise ValueError(f"tokens must be one of {sorted(TOKEN_GRID_CONFIGS)}, got {tokens!r}")
    torch.manual_seed(seed)
    model = VQTokenizer(TOKEN_GRID_CONFIGS[tokens])
    cfg = CELL_TRAIN.replace(seed=seed, **({"steps": steps} if steps else {}))
    with num_threads(CELL_THREADS):
        train_tokenizer(model, cfg, progress=False)
    return model.eval()


def build_m1_tokenizer(seed: int = 0) -> VQTokenizer:
    """``vq-tokenizer-m1``: 64 px → one code per exhibit. §7.4."""
    return build_grid_tokenizer(1, seed)


def build_m4_tokenizer(seed: int = 0) -> VQTokenizer:
    """``vq-tokenizer-m4``: 64 px → 2 × 2 codes. §7.4."""
    return build_grid_tokenizer(4, seed)


def build_m16_tokenizer(seed: int = 0) -> VQTokenizer:
    """``vq-tokenizer-m16``: 64 px → 4 × 4 codes. §7.4."""
    return build_grid_tokenizer(16, seed)


for _m in (1, 4, 16):
    register_artifact(ArtifactSpec(
        TOKEN_ARTIFACTS[_m], "1", f"vlmbook.vq.tokenizer:build_m{_m}_tokenizer", seed=0,
        description=f"VQ-VAE, 64 px -> {_m} code(s) per museum exhibit, K=256, the cell recipe (Chapter 7 token sweep)"))


def load_cell_tokenizer(rebuild: bool = False) -> VQTokenizer:
    """The ``vq-tokenizer-cell`` artifact: committed copy, else cache, else rebuilt (Chapter 5's discrete route)."""
    from ..hub import load_artifact

    return load_artifact("vq-tokenizer-cell", VQTokenizer, rebuild=rebuild).eval()


def collapse_configs(image_size: int = 32, codebook_size: int = 128) -> dict[str, TokenizerConfig]:
    """Two small tokenizers that differ only in codebook learning: plain VQ (random init,
    gradient codebook loss, no restart) against EMA + k-means init + dead-code restart. §2.3."""
    base = TokenizerConfig(image_size=image_size, channels=32, downsample=2, res_blocks=0, code_dim=16,
                           codebook_size=codebook_size)
    return {"plain VQ": base.replace(ema=False, kmeans_init=False, restart_threshold=0.0),
            "EMA + restart": base}


def collapse_experiment(steps: int = 150, batch_size: int = 16, seed: int = 0, image_size: int = 32,
                        codebook_size: int = 128, threads: int = TRAIN_THREADS
                        ) -> dict[str, tuple[VQTokenizer, dict[str, float]]]:
    """Train both :func:`collapse_configs` tokenizers on the same batches (on ``threads`` threads);
    returns ``{label: (model, metrics on 256 val exhibits)}``. §2.3."""
    out = {}
    images = eval_images(256, image_size)
    for label, cfg in collapse_configs(image_size, codebook_size).items():
        torch.manual_seed(seed)
        model = VQTokenizer(cfg)
        with num_threads(threads):
            train_tokenizer(model, TokenizerTrainConfig(steps=steps, batch_size=batch_size, seed=seed), progress=False)
        out[label] = (model.eval(), evaluate_tokenizer(model, images))
    return out
