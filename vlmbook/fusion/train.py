"""Teaching a VLM to answer museum questions: data, loss on answers only, evaluation (Chapter 5 §5.7).

Questions, answers and images come from :class:`vlmbook.data.Museum`. Training minimises the
next-token loss on the answer tokens (and ``<|end|>``) only; held-out accuracy is the exact
match of the greedy answer, computed in one teacher-forced pass: greedy decoding returns exactly
the reference answer iff the arg-max at every answer position equals the reference token.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.museum import COLOUR_NAMES, SHAPES, SIZE_NAMES
from ..loop import LoopConfig, fit
from ..util import step_generator
from .continuous import PatchEncoder
from .data import (CAPTION_PROMPT, EXCLUDED_TYPES, Batcher, QAData, museum_qa, patch_labels,  # noqa: F401
                   with_oracle_features)
from .evaluate import accuracy_by_type, evaluate, majority_baseline, teacher_forced_accuracy  # noqa: F401
from .model import VisionLanguageModel, VLMConfig

def answer_loss(model: VisionLanguageModel, batch: dict, step: int = 0):
    """Cross-entropy on answer tokens only (``loop.fit`` loss function). §5.7."""
    logits = model(batch["input_ids"], images=batch.get("images"), codes=batch.get("codes"), positions=batch["targets"],
                   features=batch.get("features"))
    loss = F.cross_entropy(logits.float(), batch["labels"])
    acc = (logits.argmax(-1) == batch["labels"]).float().mean()
    return loss, {"token_acc": float(acc)}


@dataclasses.dataclass
class DemoConfig(Config):
    """The training demo: data sizes, optimiser and steps per route."""

    train_scenes: int = 2000
    test_scenes: int = 200
    steps: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    beta2: float = 0.999
    warmup: int = 30
    curriculum: int = 0
    caption_frac: float = 0.25
    encoder_steps: int = 0
    encoder_lr: float = 3e-3
    encoder_fresh: bool = False
    encoder_seed: int = 0
    freeze_encoder: bool = True
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("train_scenes", "test_scenes", "steps", "batch_size", "lr", "encoder_lr")
        self.check_non_negative("encoder_steps", "curriculum")

    @classmethod
    def tiny(cls) -> "DemoConfig":
        """The recipe's run: a 1,500-step warm-up of the image side on fresh exhibits at learning rate
        3e-3 (at 1e-3 the ViT reads barely half of the cells' shapes after as many steps, §5.7), then
        3,000 LM steps each at a high learning rate (QK-norm keeps it stable) with AdamW β2 = 0.95."""
        return cls(steps=3000, encoder_steps=1500, encoder_fresh=True, warmup=100, caption_frac=0.0, lr=1e-2,
                   beta2=0.95)

    @classmethod
    def offline(cls) -> "DemoConfig":
        """The committed ``vlm-tiny`` artifact's run: the tiny recipe (3,000 LM steps, one core)."""
        return cls.tiny()

    @classmethod
    def base(cls) -> "DemoConfig":
        """The ``base`` run for one GPU: 10× the exhibits, 2× the steps, batch 128, the curriculum of
        ``vlm-tiny`` stretched to 2,000 steps, the encoder warmed up on fresh exhibits (not yet trained
        on a GPU)."""
        return cls(train_scenes=20000, test_scenes=1000, steps=6000, batch_size=128, lr=3e-3, beta2=0.95, warmup=300,
                   caption_frac=0.0, encoder_steps=2000, encoder_fresh=True, curriculum=2000)


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
    key = (cfg.grid, cfg.image_size, cfg.compressor, demo.encoder_steps, demo.encoder_lr, demo.encoder_fresh,
           demo.encoder_seed, demo.batch_size, len(train.images), train.split, train.start)
    if key not in _ENCODERS:
        _ENCODERS.clear()  # one ViT is enough to keep
        _ENCODERS[key] = _train_clip_encoder(cfg, demo, train, device)
    return copy.deepcopy(_ENCODERS[key])


_ENCODERS: dict[tuple, tuple[torch.nn.Module, torch.nn.Module | None]] = {}


def _train_clip_encoder(cfg: VLMConfig, demo: DemoConfig, train: QAData, device: str | None
                        ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    from ..vision.clip import CLIPConfig, load_clip_tiny
    from .model import build_compressor

    vision = copy.deepcopy(load_clip_tiny().vision).requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(demo.encoder_seed + 1)
        compressor = build_compressor(cfg, CLIPConfig.tiny().vision_dim)
    if demo.encoder_steps:
        # with encoder_fresh, every step draws new exhibits from the generator (labels are free):
        # on the 2,000 training exhibits alone the ViT memorises them and its shape read-out stalls
        stream = museum_stream(cfg.image_size, cfg.grid, start=len(train.images)) if demo.encoder_fresh else None
        parts = [vision] + ([compressor] if compressor is not None else [])
        pretrain_encoder(torch.nn.Sequential(*parts), train.images, patch_labels("train", len(train.images), cfg.grid),
                         demo.encoder_steps, demo.batch_size, demo.encoder_lr, demo.encoder_seed, device, stream=stream)
    return vision.cpu().eval(), (compressor.cpu().eval() if compressor is not None else None)


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
    """(n, 3, H, W) -> (n, N, D) encoder features, computed once for a frozen encoder."""
    dev = next(encoder.parameters()).device
    return torch.cat([encoder(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])


def train_route(route: str, vlm_cfg: VLMConfig | None = None, demo: DemoConfig | None = None,
                train: QAData | None = None, device: str | None = None,
                encoder: PatchEncoder | tuple | None = None, eval_data: QAData | None = None,
                eval_every: int = 0, callback: Callable[[int, VisionLanguageModel], None] | None = None,
                ) -> tuple[VisionLanguageModel, list[dict]]:
    """Build and train one route on museum QA; returns ``(model, history)``. §5.7.

    With ``demo.encoder_steps`` (or a warmed-up ``encoder`` to share between routes: a
    :class:`PatchEncoder`, or ``(vision, compressor)`` from :func:`clip_encoder`) the image side
    starts from per-cell labels; with ``demo.freeze_encoder`` it then stays fixed and its
    features are computed once, so each step costs only the projector and the LM. A model with
    ``image_side='features'`` reads the data's ``features`` (oracle cell features by default).
    With ``eval_data``, held-out accuracy (teacher-forced, cheap) is measured every ``eval_every``
    steps, and greedy accuracy at the end, and kept as the model's ``training_log`` (saved with
    it). ``callback(step, model)`` runs before each step, outside the loss function.
    """
    if eval_every < 0 or (eval_every and eval_data is None):
        raise ValueError(f"eval_every must be >= 0 and needs eval_data, got {eval_every} with "
                         f"{'no ' if eval_data is None else ''}eval_data")
    demo = demo or DemoConfig.tiny()
    cfg = (vlm_cfg or VLMConfig.tiny()).replace(route=route, seed=demo.seed)
    if cfg.image_side == "features" and not cfg.feature_dim:
        from .data import ORACLE_DIM
        cfg = cfg.replace(feature_dim=ORACLE_DIM)
    vlm = VisionLanguageModel(cfg)
    if train is None:
        train = museum_qa("train", demo.train_scenes, cfg.image_size, grid=cfg.grid)
    keep = train.features if cfg.image_side == "features" else None
    train = dataclasses.replace(train, codes=None, features=keep)
    if cfg.image_side == "features" and train.features is None:
        train = with_oracle_features(train, cfg.grid)
    if eval_data is not None and cfg.image_side == "features" and eval_data.features is None:
        eval_data = with_oracle_features(eval_data, cfg.grid)
    if route == "discrete" and cfg.image_side != "vq":  # Chapter 2's VQ tokenizer comes trained
        vlm.quantizer.fit(train.images[:1000], seed=demo.seed)
    elif cfg.image_side == "patch" and (encoder is not None or demo.encoder_steps):
        encoder = encoder if encoder is not None else warm_encoder(cfg, demo, train, device)
        vlm.encoder.load_state_dict(encoder.state_dict())
        if demo.freeze_encoder:
            vlm.encoder.requires_grad_(False)
            train.features = encode_all(vlm.encoder, train.images)
    elif cfg.image_side == "clip":
        vision, compressor = encoder if encoder is not None else clip_encoder(cfg, demo, train, device)
        vlm.encoder.load_state_dict(vision.state_dict())
        if compressor is not None and vlm.compressor is not None:
            vlm.compressor.load_state_dict(compressor.state_dict())
        if demo.freeze_encoder:
            # the compressor was trained with the ViT: both stay as the warm-up left them; the
            # ViT's patch features are computed once, the (cheap) compressor runs every step
            vlm.encoder.requires_grad_(False)
            if vlm.compressor is not None:
                vlm.compressor.requires_grad_(False)
            train.features = encode_all(vlm.encoder, train.images)
    b = Batcher(vlm, train, demo.batch_size, demo.seed, demo.caption_frac, demo.curriculum)
    loop = LoopConfig(steps=demo.steps, lr=demo.lr, warmup=demo.warmup, weight_decay=0.01, beta2=demo.beta2,
                      seed=demo.seed, log_every=max(1, demo.steps // 20), eval_every=eval_every)
    log: list[dict] = []

    def eval_fn(model: VisionLanguageModel, step: int) -> dict[str, float]:
        # loop.fit calls this every eval_every steps (in eval mode, outside the loss); the final
        # score is the greedy one below, so the teacher-forced pass at the last step is skipped
        if step == demo.steps:
            return {}
        row = teacher_forced_accuracy(model, eval_data)
        log.append({"step": step, **row})
        return {k: v for k, v in row.items() if k == "all"}

    def batch_fn(step: int) -> dict:
        if callback is not None:
            callback(step, vlm)
            vlm.train()
        return b.batch(step)

    hist = fit(vlm, answer_loss, batch_fn, loop, device=device, desc=f"vlm-{route}",
               eval_fn=eval_fn if eval_every else None)
    if eval_data is not None:
        log.append({"step": demo.steps, "greedy": True, **evaluate(vlm, eval_data)})
        vlm.training_log = log
    return vlm, hist


def build_vlm_tiny(seed: int = 0) -> VisionLanguageModel:
    """Artifact ``vlm-tiny``: the recipe of ``VLMConfig.tiny()`` (Chapter 4's encoder, continuous
    route) with a curriculum, trained with ``DemoConfig.offline()`` on one thread and scored
    greedily on the 200 test exhibits. The same run as the ablation's ``curriculum``/``clip`` cell
    of this seed. §5.7."""
    from .ablation import run_cell

    return run_cell("curriculum", seed, DemoConfig.offline().steps, "clip", return_model=True)[1].eval()


def run_demo(vlm_cfg: VLMConfig | None = None, demo: DemoConfig | None = None, routes: Sequence[str] | None = None,
             test: QAData | None = None) -> dict[str, Any]:
    """Train every route on the same data and score it on held-out exhibits. §5.7.

    Returns ``{route: {"model", "history", "accuracy", "seconds"}}``, under ``"baseline"`` the
    image-blind majority answer's accuracy (:func:`majority_baseline`), and under
    ``"encoder_seconds"`` the time of the shared encoder warm-up.
    """
    from .model import ROUTES

    demo = demo or DemoConfig.tiny()
    cfg = vlm_cfg or VLMConfig.tiny()
    train = museum_qa("train", demo.train_scenes, cfg.image_size)
    test = test or museum_qa("test", demo.test_scenes, cfg.image_size)
    out: dict[str, Any] = {"baseline": {"accuracy": majority_baseline(train, test)}}
    routes = list(routes or ROUTES)
    t0 = time.perf_counter()
    encoder = warm_encoder(cfg, demo, train) if demo.encoder_steps and set(routes) - {"discrete"} else None
    out["encoder_seconds"] = time.perf_counter() - t0
    for r in routes:
        t0 = time.perf_counter()
        model, hist = train_route(r, cfg, demo, train=train, encoder=encoder)
        secs = time.perf_counter() - t0
        out[r] = {"model": model, "history": hist, "accuracy": evaluate(model, test), "seconds": secs}
    return out


class CellProbe(torch.nn.Module):
    """An encoder (B, 3, H, W) -> (B, M, D) plus linear (colour, shape, size) heads per image token. §5.7."""

    def __init__(self, encoder: torch.nn.Module, dim: int):
        super().__init__()
        self.encoder = encoder
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, n + 1) for n in (len(COLOUR_NAMES), len(SHAPES),
                                                                                  len(SIZE_NAMES)))

    @torch.no_grad()
    def readout(self, images: torch.Tensor, labels: torch.Tensor, batch: int = 250) -> dict[str, float]:
        """(n, 3, H, W) exhibits, (n, M, 3) cell labels -> % of occupied cells whose colour, shape and
        size the heads read correctly, and shape by object size (``shape_small`` …). §5.7."""
        if labels.ndim != 3 or labels.shape[0] != images.shape[0] or labels.shape[-1] != 3:
            raise ValueError(f"labels must be (n, M, 3) for {images.shape[0]} images, got {tuple(labels.shape)}")
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        feats = torch.cat([self.encoder(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])
        self.train(was)
        pred = torch.stack([h.cpu()(feats).argmax(-1) for h in self.heads], -1)
        occupied = labels[..., 0] > 0
        right = pred == labels
        out = {name: 100 * float(right[..., j][occupied].float().mean()) for j, name in
               enumerate(("colour", "shape", "size"))}
        out["all_three"] = 100 * float(right.all(-1)[occupied].float().mean())
        for j, size in enumerate(SIZE_NAMES):
            sel = labels[..., 2] == j + 1
            out[f"shape_{size}"] = 100 * float(right[..., 1][sel].float().mean()) if sel.any() else float("nan")
        return out


def pretrain_encoder(encoder: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 200,
                     batch_size: int = 64, lr: float = 3e-3, seed: int = 0, device: str | None = None,
                     stream=None, return_probe: bool = False) -> list[dict] | tuple[list[dict], CellProbe]:
    """Warm up an image encoder on per-patch (colour, shape, size) labels before fusion. §5.7.

    Stands in for Chapter 4's pretrained encoders: the LM then starts from features in which the
    museum's attributes are linearly readable. ``stream(step, n)`` (see :func:`museum_stream`), if
    given, supplies each step's batch instead of sampling ``images``/``labels``. Returns the
    training history, and with ``return_probe`` also the :class:`CellProbe` (encoder + heads).
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} label rows")
    with torch.no_grad():
        dim = encoder(images[:1]).shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = CellProbe(encoder, dim)

    def batch_fn(step: int):
        if stream is not None:
            imgs, labs = stream(step, batch_size)
            return {"images": imgs, "labels": labs}
        g = step_generator(seed, step, 7919)  # the stride the committed records were drawn with
        idx = torch.randint(len(images), (batch_size,), generator=g)
        return {"images": images[idx], "labels": labels[idx]}

    def loss_fn(model, batch, step):
        f = model.encoder(batch["images"])
        losses = [F.cross_entropy(h(f).flatten(0, 1), batch["labels"][..., j].flatten()) for j, h in enumerate(model.heads)]
        return sum(losses)

    loop = LoopConfig(steps=steps, lr=lr, warmup=min(20, steps // 5), seed=seed, log_every=max(1, steps // 10))
    hist = fit(probe, loss_fn, batch_fn, loop, device=device, desc="encoder")
    return (hist, probe) if return_probe else hist
