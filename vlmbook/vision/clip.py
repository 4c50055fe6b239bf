"""The book's own CLIP: a ViT and a text encoder trained contrastively on museum captions.

InfoNCE with a learnable temperature (Radford et al., 2021) pulls each exhibit's image and
caption embeddings together and pushes the other B - 1 pairs in the batch apart. The trained
vision tower is the frozen encoder of later chapters (``patch_features``), registered as the
artifact ``clip-tiny``. Chapter 4 §4.1.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.museum import Museum, caption
from ..hub import ArtifactSpec, PretrainedMixin, register_artifact
from ..loop import LoopConfig, fit
from .text import MuseumTokenizer, TextEncoder
from .vit import VisionEncoder

_VOCAB = len(MuseumTokenizer())


@dataclasses.dataclass
class CLIPConfig(Config):
    """Sizes of the two towers and the contrastive head."""

    image_size: int = 64
    patch_size: int = 8
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 4
    text_dim: int = 64
    text_depth: int = 1
    text_heads: int = 4
    embed_dim: int = 64
    max_text_len: int = 80
    vocab_size: int = _VOCAB
    mlp_ratio: int = 4
    init_temperature: float = 0.07

    def validate(self) -> None:
        super().validate()
        self.check_positive("image_size", "patch_size", "vision_dim", "vision_depth", "vision_heads", "text_dim",
                            "text_depth", "text_heads", "embed_dim", "max_text_len", "vocab_size", "mlp_ratio")
        self.check_range("init_temperature", 1e-3, 1.0)
        self.check_divisible("image_size", self.patch_size, "patch_size")
        self.check_divisible("vision_dim", self.vision_heads, "vision_heads")
        self.check_divisible("vision_dim", 4, "4 (2-D sin-cos positions)")
        self.check_divisible("text_dim", self.text_heads, "text_heads")
        self.check_divisible("text_dim", 2, "2 (sin-cos positions)")
        if self.vocab_size < _VOCAB:
            self._fail("vocab_size", f"must hold the museum vocabulary of {_VOCAB} words")

    @classmethod
    def tiny(cls) -> "CLIPConfig":
        return cls()

    @classmethod
    def base(cls) -> "CLIPConfig":
        return cls(patch_size=4, vision_dim=256, vision_depth=6, vision_heads=8, text_dim=256, text_depth=4,
                   text_heads=8, embed_dim=256)


class CLIPModel(nn.Module, PretrainedMixin):
    """Image and text towers with projections to a shared space and a learnable temperature."""

    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig):
        super().__init__()
        if not isinstance(config, CLIPConfig):
            raise ValueError(f"CLIPModel needs a CLIPConfig, got {type(config).__name__}")
        c = self.config = config
        self.tokenizer = MuseumTokenizer()
        self.vision = VisionEncoder(c.image_size, c.patch_size, c.vision_dim, c.vision_depth, c.vision_heads,
                                    c.mlp_ratio)
        self.text = TextEncoder(c.vocab_size, c.text_dim, c.text_depth, c.text_heads, c.max_text_len, c.mlp_ratio)
        self.image_proj = nn.Linear(c.vision_dim, c.embed_dim, bias=False)
        self.text_proj = nn.Linear(c.text_dim, c.embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / c.init_temperature)))

    @property
    def num_patches(self) -> int:
        return self.vision.num_patches

    @property
    def feature_dim(self) -> int:
        return self.config.vision_dim

    @property
    def temperature(self) -> float:
        """The current softmax temperature tau = 1 / exp(log_scale)."""
        return float(torch.exp(-self.log_scale.detach().clamp(max=math.log(100.0))))

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, N, D) patch features, the input of every compressor. §4.1."""
        return self.vision(images)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, E) unit-norm image embeddings (mean of patch tokens)."""
        return F.normalize(self.image_proj(self.vision(images).mean(1)), dim=-1)

    def encode_text(self, texts: Sequence[str] | str) -> torch.Tensor:
        """texts -> (B, E) unit-norm text embeddings."""
        ids, mask = self.tokenizer.encode(texts, self.config.max_text_len)
        dev = self.log_scale.device
        return self.encode_ids(ids.to(dev), mask.to(dev))

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask (B, L) -> (B, E) unit-norm text embeddings."""
        return F.normalize(self.text_proj(self.text(ids, mask)[1]), dim=-1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> (B, B) logits exp(s) * cos(image_i, text_j); the diagonal holds the true pairs."""
        scale = self.log_scale.clamp(max=math.log(100.0)).exp()
        return scale * self.encode_image(images) @ self.encode_ids(ids, mask).t()


def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a (B, B) logit matrix whose diagonal holds matching pairs. §4.1."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"clip_loss needs a square (B, B) logit matrix, got {getattr(logits, 'shape', logits)}")
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# ---------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class CLIPTrainConfig(Config):
    """Data and schedule for contrastive training (the optimiser settings are a LoopConfig)."""

    batch_size: int = 64
    steps: int = 600
    lr: float = 3e-3
    warmup: int = 20
    seed: int = 0
    ckpt_every: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("batch_size", "steps", "lr")
        if self.batch_size < 2:
            self._fail("batch_size", "must be >= 2 (contrastive learning needs negatives)")

    @classmethod
    def tiny(cls) -> "CLIPTrainConfig":
        return cls()

    @classmethod
    def base(cls) -> "CLIPTrainConfig":
        return cls(batch_size=256, steps=3000, lr=1e-3, warmup=200)

    def loop(self) -> LoopConfig:
        return LoopConfig(steps=self.steps, lr=self.lr, warmup=self.warmup, weight_decay=0.05, seed=self.seed,
                          log_every=20, ckpt_every=self.ckpt_every)


def caption_batch(step: int, batch_size: int, size: int = 64, seed: int = 0,
                  tokenizer: MuseumTokenizer | None = None, max_len: int = 80) -> dict[str, torch.Tensor]:
    """Training batch ``step``: fresh train-split exhibits, images (B, 3, S, S), caption ids and mask."""
    tok = tokenizer or MuseumTokenizer()
    start = step * batch_size
    museum = Museum("train", size=size, seed=seed, length=start + batch_size)
    texts = [caption(museum.scene(i), variant=(i * 7 + step) % 3) for i in range(start, start + batch_size)]
    ids, mask = tok.encode(texts, max_len)
    return {"images": museum.tensors(start, batch_size), "ids": ids, "mask": mask}


def train_clip(config: CLIPConfig | None = None, train: CLIPTrainConfig | None = None,
               ckpt_dir: str | Path | None = None, device: str | None = None
               ) -> tuple[CLIPModel, list[dict[str, float]]]:
    """Train a CLIPModel on museum captions with ``vlmbook.loop.fit``; returns (model, history). §4.1."""
    config = config or CLIPConfig.tiny()
    train = train or CLIPTrainConfig.tiny()
    torch.manual_seed(train.seed)
    model = CLIPModel(config)
    tok = model.tokenizer

    def batch_fn(step: int) -> dict[str, torch.Tensor]:
        return caption_batch(step, train.batch_size, config.image_size, train.seed, tok, config.max_text_len)

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor], step: int):
        logits = m(batch["images"], batch["ids"], batch["mask"])
        acc = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float().mean()
        return clip_loss(logits), {"batch_acc": float(acc), "temperature": float(torch.exp(-m.log_scale.detach()))}

    history = fit(model, loss_fn, batch_fn, train.loop(), ckpt_dir=ckpt_dir, device=device, desc="clip")
    return model.cpu().eval(), history


@torch.no_grad()
def embed_exhibits(model: CLIPModel, split: str = "test", n: int = 256, batch: int = 128
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and caption embeddings (n, E) of the first n exhibits of a held-out split."""
    if n < 2:
        raise ValueError(f"need at least 2 exhibits to retrieve among, got n={n}")
    model.eval()
    museum = Museum(split, size=model.config.image_size, length=n)
    dev = model.log_scale.device
    img, txt = [], []
    for s in range(0, n, batch):
        k = min(batch, n - s)
        img.append(model.encode_image(museum.tensors(s, k).to(dev)).cpu())
        txt.append(model.encode_text([caption(museum.scene(i)) for i in range(s, s + k)]).cpu())
    return torch.cat(img), torch.cat(txt)


def retrieval_accuracy(model: CLIPModel, split: str = "test", n: int = 256, k: int = 1) -> dict[str, float]:
    """Zero-shot retrieval on n held-out exhibits: top-k image->text and text->image accuracy. §4.1."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    img, txt = embed_exhibits(model, split, n)
    sim = img @ txt.t()
    target = torch.arange(n)[:, None]
    i2t = (sim.topk(min(k, n), dim=1).indices == target).any(1).float().mean().item()
    t2i = (sim.t().topk(min(k, n), dim=1).indices == target).any(1).float().mean().item()
    return {"image_to_text": i2t, "text_to_image": t2i, "chance": min(k, n) / n, "n": n, "k": k}


@torch.no_grad()
def clip_score(model: CLIPModel, images: torch.Tensor, texts: Sequence[str], w: float = 2.5) -> torch.Tensor:
    """Museum-domain CLIPScore: w * max(cos(image, text), 0) per pair, (B,) (Hessel et al., 2021). §4.1."""
    if len(texts) != len(images):
        raise ValueError(f"clip_score needs one text per image, got {len(images)} images and {len(texts)} texts")
    model.eval()
    dev = model.log_scale.device
    cos = (model.encode_image(images.to(dev)) * model.encode_text(list(texts))).sum(-1)
    return w * cos.clamp_min(0).cpu()


# ---------------------------------------------------------------------------------------
# The shared artifact
# ---------------------------------------------------------------------------------------
def build_tiny_clip(seed: int = 0) -> CLIPModel:
    """The ``clip-tiny`` artifact: CLIPConfig.tiny() trained with CLIPTrainConfig.tiny() and ``seed``.

    Trained on one CPU thread: as fast as several for a model this small, far steadier on a
    shared machine, and the same float reductions on every machine.
    """
    from ..device import num_threads

    with num_threads(1):
        model, _ = train_clip(CLIPConfig.tiny(), CLIPTrainConfig.tiny().replace(seed=seed), device="cpu")
    return model


CLIP_TINY = register_artifact(ArtifactSpec(
    "clip-tiny", "1", "vlmbook.vision.clip:build_tiny_clip", seed=0,
    description="Chapter 4's CLIP (ViT 64 px, patch 8 -> 64 patch features of width 64) trained on museum captions"))


def load_clip_tiny(device: str = "cpu", rebuild: bool = False) -> CLIPModel:
    """The frozen tiny encoder later chapters use (committed copy, else cache, else retrained)."""
    from ..hub import load_artifact

    model = load_artifact("clip-tiny", CLIPModel, device=device, rebuild=rebuild)
    model.eval().requires_grad_(False)
    return model
