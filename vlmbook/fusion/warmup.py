"""Warming up the image side before fusion: per-cell labels, a fresh-exhibit stream, a read-out probe (Chapter 5 §5.7).

A language model can only name what its image tokens say. Before the guide is trained, its image
side — this chapter's small ``PatchEncoder``, or Chapter 4's ``clip-tiny`` ViT with a compressor —
is trained on the museum's per-cell (colour, shape, size) labels, and :class:`CellProbe` measures
how much of each cell its tokens make linearly readable.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.museum import COLOUR_NAMES, SHAPES, SIZE_NAMES
from ..hub import PretrainedMixin
from ..loop import LoopConfig, fit
from ..util import step_generator
from .continuous import PatchEncoder
from .data import QAData, patch_labels
from .model import VLMConfig

if TYPE_CHECKING:  # DemoConfig lives with the training run that uses this module
    from .train import DemoConfig


def warm_encoder(cfg: VLMConfig, demo: DemoConfig, train: QAData, device: str | None = None) -> PatchEncoder:
    """A :class:`PatchEncoder` for ``cfg`` warmed up on the per-patch labels of ``train``'s exhibits. §5.7."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(demo.seed + 1)
        enc = PatchEncoder(cfg.hidden, cfg.grid, cfg.enc_channels)
    pretrain_encoder(enc, train.images, patch_labels("train", len(train.images), cfg.grid), demo.encoder_steps,
                     demo.batch_size, demo.lr, demo.seed, device)
    return enc.cpu()


def clip_encoder(cfg: VLMConfig, demo: DemoConfig, train: QAData, device: str | None = None
                 ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Chapter 4's ``clip-tiny`` vision tower and ``cfg.compressor`` (Chapter 4's Perceiver Resampler in
    the recipe), trained together on per-cell labels for ``demo.encoder_steps`` (seeded by
    ``demo.encoder_seed``) so that image token k describes cell k; returns ``(vision, compressor)``. §5.7.

    Contrastive training on captions leaves where-is-what only partly readable from the patch
    features; the warm-up makes each cell's colour, shape and size linearly readable from its token.
    The result depends only on its own settings, so runs that share them (the seeds of the language
    model in the ablation) share one warm-up, kept in memory.
    """
    if demo.encoder_artifact:
        from ..hub import load_artifact

        enc = load_artifact(demo.encoder_artifact, CellEncoder)
        enc.matches(cfg, demo)
        return copy.deepcopy(enc.vision), copy.deepcopy(enc.compressor)
    key = (cfg.grid, cfg.image_tokens, demo.encoder_joint, cfg.image_size, cfg.compressor, demo.encoder_steps,
           demo.encoder_lr, demo.encoder_fresh, demo.encoder_seed, demo.batch_size, len(train.images), train.split, train.start)
    if key not in _ENCODERS:
        _ENCODERS.clear()  # one ViT is enough to keep
        _ENCODERS[key] = _train_clip_encoder(cfg, demo, train, device)
    return copy.deepcopy(_ENCODERS[key])


_ENCODERS: dict[tuple, tuple[torch.nn.Module, torch.nn.Module | None]] = {}


def _train_clip_encoder(cfg: VLMConfig, demo: DemoConfig, train: QAData, device: str | None
                        ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    # with encoder_fresh, every step draws new exhibits from the generator (labels are free):
    # on the 2,000 training exhibits alone the ViT memorises them and its shape read-out stalls
    stream = museum_stream(cfg.image_size, cfg.grid, start=len(train.images)) if demo.encoder_fresh else None
    labels = patch_labels("train", len(train.images), cfg.grid) if demo.encoder_steps and stream is None else None
    vision, compressor, _ = train_clip_side(cfg, demo.encoder_steps, demo.batch_size, demo.encoder_lr,
                                            demo.encoder_seed, device, stream=stream,
                                            images=None if stream is not None else train.images, labels=labels,
                                            joint=demo.encoder_joint)
    return vision, compressor


def train_clip_side(cfg: VLMConfig, steps: int, batch_size: int, lr: float, seed: int, device: str | None = None,
                    stream=None, images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                    joint: bool = False) -> tuple[torch.nn.Module, torch.nn.Module | None, CellProbe | None]:
    """Chapter 4's ``clip-tiny`` ViT and ``cfg.compressor`` (seeded by ``seed``) trained together for
    ``steps`` on per-cell labels — drawn from ``stream`` or from ``images``/``labels`` — so that image
    token k describes cell k (or, with ``joint`` or M ≠ grid², so that the M tokens together describe
    every cell); returns ``(vision, compressor, probe)`` (no probe without steps). §5.7."""
    from ..vision.clip import CLIPConfig, load_clip_tiny
    from .model import build_compressor

    vision = copy.deepcopy(load_clip_tiny().vision).requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        compressor = build_compressor(cfg, CLIPConfig.tiny().vision_dim)
    probe = None
    if steps:
        parts = [vision] + ([compressor] if compressor is not None else [])
        _, probe = pretrain_encoder(torch.nn.Sequential(*parts), images, labels, steps, batch_size, lr, seed, device,
                                    stream=stream, return_probe=True, joint=joint)
    return vision.cpu().eval(), (compressor.cpu().eval() if compressor is not None else None), probe


@dataclasses.dataclass
class CellEncoderConfig(Config):
    """Chapter 4's ``clip-tiny`` ViT and a compressor, warmed up on per-cell labels of fresh exhibits."""

    compressor: str = "perceiver"
    compressor_depth: int = 1
    grid: int = 3
    image_size: int = 64
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 0
    #: the fresh exhibits start after the guide's training exhibits (``DemoConfig.train_scenes``)
    stream_start: int = 2000

    def validate(self) -> None:
        super().validate()
        self.check_positive("compressor_depth", "grid", "image_size", "steps", "batch_size", "lr")
        self.check_non_negative("seed", "stream_start")
        from .model import COMPRESSORS

        self.check_choice("compressor", COMPRESSORS)

    def vlm_config(self) -> VLMConfig:
        """The guide's config with this image side."""
        return VLMConfig.tiny().replace(compressor=self.compressor, compressor_depth=self.compressor_depth,
                                        grid=self.grid, image_size=self.image_size)


class CellEncoder(torch.nn.Module, PretrainedMixin):
    """(B, 3, H, W) -> (B, grid², D): the warmed-up ViT and compressor, one token per exhibit cell. §5.7."""

    config_class = CellEncoderConfig

    def __init__(self, config: CellEncoderConfig):
        super().__init__()
        from ..vision.clip import CLIPConfig
        from ..vision.vit import VisionEncoder
        from .model import build_compressor

        config.validate()
        self.config = config
        c = CLIPConfig.tiny()
        self.vision = VisionEncoder(c.image_size, c.patch_size, c.vision_dim, c.vision_depth, c.vision_heads,
                                    c.mlp_ratio)
        self.compressor = build_compressor(config.vlm_config(), c.vision_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.vision(images)
        return self.compressor(x) if self.compressor is not None else x

    def matches(self, cfg: VLMConfig, demo: DemoConfig) -> None:
        """Raise ``ValueError`` naming the first setting in which this warm-up differs from ``cfg``/``demo``."""
        want = {"compressor": cfg.compressor, "compressor_depth": cfg.compressor_depth, "grid": cfg.grid,
                "image_size": cfg.image_size, "steps": demo.encoder_steps, "batch_size": demo.batch_size,
                "lr": demo.encoder_lr, "seed": demo.encoder_seed}
        for k, v in want.items():
            if getattr(self.config, k) != v:
                raise ValueError(f"the warmed-up image side has {k}={getattr(self.config, k)!r}, the run wants {v!r}")
        if not demo.encoder_fresh:
            raise ValueError("a committed warm-up drew fresh exhibits: it needs demo.encoder_fresh=True")


def build_cell_encoder(seed: int = 0) -> CellEncoder:
    """Artifact ``clip-cells-tiny``: ``clip-tiny``'s ViT and a one-layer Perceiver Resampler trained together
    for 1,500 steps on per-cell labels of fresh exhibits, one thread — the warm-up of ``vlm-tiny``. §5.7."""
    from ..device import num_threads

    c = CellEncoderConfig(seed=seed)
    with num_threads(1):
        vision, compressor, _ = train_clip_side(c.vlm_config(), c.steps, c.batch_size, c.lr, c.seed, "cpu",
                                                stream=museum_stream(c.image_size, c.grid, start=c.stream_start))
    enc = CellEncoder(c)
    enc.vision.load_state_dict(vision.state_dict())
    if compressor is not None:
        enc.compressor.load_state_dict(compressor.state_dict())
    return enc.eval()


def museum_stream(size: int, grid: int, start: int = 0, split: str = "train"):
    """``(step, n) -> (images (n, 3, size, size), labels (n, grid², 3))`` of fresh exhibits ``start + step * n …``. §5.7."""
    from ..data.museum import Museum

    museum = Museum(split, size=size, length=2 ** 31)

    def draw(step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = start + step * n
        return museum.tensors(first, n), patch_labels(split, n, grid, start=first)

    return draw


@torch.no_grad()
def encode_all(encoder: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(n, 3, H, W) images -> (n, N, D) features of a frozen encoder (or (n, N, D) features -> (n, M, D)
    through a frozen compressor), computed once in chunks of ``batch``. §5.7."""
    dev = next(encoder.parameters()).device
    return torch.cat([encoder(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])


class CellProbe(torch.nn.Module):
    """An encoder (B, 3, H, W) -> (B, M, D) plus linear (colour, shape, size) heads for each of the grid²
    cells: per image token when token k is cell k (``joint=False``, needs M = cells), else reading all
    M tokens at once (``joint=True``: any M, Chapter 7 §7.4's token sweep). §5.7."""

    def __init__(self, encoder: torch.nn.Module, dim: int, tokens: int | None = None, cells: int | None = None,
                 joint: bool = False):
        super().__init__()
        if joint and not (tokens and cells):
            raise ValueError(f"a joint read-out needs tokens and cells, got tokens={tokens}, cells={cells}")
        if not joint and tokens and cells and tokens != cells:
            raise ValueError(f"{tokens} image tokens for {cells} cells: per-token heads need one token per cell "
                             "(use joint=True)")
        self.encoder = encoder
        self.joint, self.cells = joint, cells
        sizes = [n + 1 for n in (len(COLOUR_NAMES), len(SHAPES), len(SIZE_NAMES))]
        if joint:
            self.heads = torch.nn.ModuleList(torch.nn.Linear(tokens * dim, cells * n) for n in sizes)
        else:
            self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, n) for n in sizes)

    def logits(self, f: torch.Tensor) -> list[torch.Tensor]:
        """(B, M, D) image tokens -> [(B, cells, classes)] for colour, shape and size."""
        if not self.joint:
            return [h(f) for h in self.heads]
        flat = f.flatten(1)
        return [h(flat).view(f.shape[0], self.cells, -1) for h in self.heads]

    @torch.no_grad()
    def readout(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> dict[str, float]:
        """(n, 3, H, W) exhibits, (n, cells, 3) cell labels -> % of occupied cells whose colour, shape and
        size the heads read correctly, and shape by object size (``shape_small`` …). §5.7."""
        if labels.ndim != 3 or labels.shape[0] != images.shape[0] or labels.shape[-1] != 3:
            raise ValueError(f"labels must be (n, cells, 3) for {images.shape[0]} images, got {tuple(labels.shape)}")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device

        def predict(x: torch.Tensor) -> torch.Tensor:  # (b, 3, H, W) -> (b, M, 3) predicted classes
            f = self.encoder(x.to(dev))
            return torch.stack([z.argmax(-1) for z in self.logits(f)], -1).cpu()

        pred = torch.cat([predict(images[i:i + batch]) for i in range(0, len(images), batch)])
        self.train(was)
        occupied = labels[..., 0] > 0
        right = pred == labels
        out = {name: 100 * float(right[..., j][occupied].float().mean()) for j, name in
               enumerate(("colour", "shape", "size"))}
        out["all_three"] = 100 * float(right.all(-1)[occupied].float().mean())
        for j, size in enumerate(SIZE_NAMES):
            sel = labels[..., 2] == j + 1
            out[f"shape_{size}"] = 100 * float(right[..., 1][sel].float().mean()) if sel.any() else float("nan")
        return out


def pretrain_encoder(encoder: torch.nn.Module, images: torch.Tensor | None, labels: torch.Tensor | None, steps: int = 200,
                     batch_size: int = 64, lr: float = 3e-3, seed: int = 0, device: str | None = None,
                     stream=None, return_probe: bool = False, joint: bool = False
                     ) -> list[dict] | tuple[list[dict], CellProbe]:
    """Warm up an image encoder on per-patch (colour, shape, size) labels before fusion. §5.7.

    Stands in for Chapter 4's pretrained encoders: the LM then starts from features in which the
    museum's attributes are linearly readable. ``stream(step, n)`` (see :func:`museum_stream`), if
    given, supplies each step's batch instead of sampling ``images``/``labels`` (which may then be
    None). An encoder with as many tokens as cells gets per-token heads (token k learns cell k)
    unless ``joint``; otherwise the heads read all its tokens at once (:class:`CellProbe`). Returns
    the training history, and with ``return_probe`` also the :class:`CellProbe` (encoder + heads).
    """
    if images is None and stream is None:
        raise ValueError("pretrain_encoder needs images and labels, or a stream of them")
    if images is not None and (labels is None or images.shape[0] != labels.shape[0]):
        raise ValueError(f"{images.shape[0]} images but {0 if labels is None else labels.shape[0]} label rows")
    with torch.no_grad():
        x0, l0 = (images[:1], labels[:1]) if images is not None else stream(0, 1)
        _, tokens, dim = encoder(x0).shape
    cells = l0.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = CellProbe(encoder, dim, tokens, cells, joint=joint or tokens != cells)

    def batch_fn(step: int):
        if stream is not None:
            imgs, labs = stream(step, batch_size)
            return {"images": imgs, "labels": labs}
        g = step_generator(seed, step, 7919)  # the stride the committed records were drawn with
        idx = torch.randint(len(images), (batch_size,), generator=g)
        return {"images": images[idx], "labels": labels[idx]}

    def loss_fn(model, batch, step):
        f = model.encoder(batch["images"])
        losses = [F.cross_entropy(z.flatten(0, 1), batch["labels"][..., j].flatten())
                  for j, z in enumerate(model.logits(f))]
        return sum(losses)

    loop = LoopConfig(steps=steps, lr=lr, warmup=min(20, steps // 5), seed=seed, log_every=max(1, steps // 10))
    hist = fit(probe, loss_fn, batch_fn, loop, device=device, desc="encoder")
    return (hist, probe) if return_probe else hist
