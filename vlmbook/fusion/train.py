"""Teaching a VLM to answer museum questions: the loss on answers only, the run's settings, one route's
training, the ``vlm-tiny`` builder (Chapter 5 §5.7). Data and batching live in ``fusion.data``,
scoring in ``fusion.evaluate``, the image side's warm-up in ``fusion.warmup``, the lever ablation
in ``fusion.ablation``.

Questions, answers and images come from :class:`vlmbook.data.Museum`. Training minimises the
next-token loss on the answer tokens (and ``<|end|>``) only; held-out accuracy is the exact
match of the greedy answer, computed in one teacher-forced pass: greedy decoding returns exactly
the reference answer iff the arg-max at every answer position equals the reference token.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..config import Config
from ..loop import LoopConfig, fit
from .continuous import PatchEncoder
from .data import (CAPTION_PROMPT, EXCLUDED_TYPES, Batcher, QAData, museum_qa, patch_labels,  # noqa: F401
                   with_oracle_features)
from .evaluate import accuracy_by_type, evaluate, majority_baseline, teacher_forced_accuracy  # noqa: F401
from .model import VisionLanguageModel, VLMConfig
# the image side's warm-up has its own module; its names stay importable from here
from .warmup import (_ENCODERS, CellProbe, clip_encoder, encode_all, museum_stream, pretrain_encoder,  # noqa: F401
                     warm_encoder)

def answer_loss(model: VisionLanguageModel, batch: dict, step: int = 0):
    """Cross-entropy on answer tokens only (``loop.fit`` loss function). §5.7."""
    logits = model(batch["input_ids"], images=batch.get("images"), codes=batch.get("codes"), positions=batch["targets"],
                   features=batch.get("features"), compressed=batch.get("compressed"))
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
    pack: int = 1
    caption_frac: float = 0.25
    encoder_steps: int = 0
    encoder_lr: float = 3e-3
    encoder_fresh: bool = False
    encoder_seed: int = 0
    #: a committed warm-up of the image side with these encoder settings (``clip-cells-tiny``), loaded
    #: instead of repeating it; "" warms up in the run
    encoder_artifact: str = ""
    #: warm-up heads read every cell from all image tokens at once instead of cell k from token k
    #: (always so when M ≠ grid²; Chapter 7 §7.4's token sweep sets it at every M)
    encoder_joint: bool = False
    freeze_encoder: bool = True
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("train_scenes", "test_scenes", "steps", "batch_size", "lr", "encoder_lr")
        self.check_non_negative("encoder_steps", "curriculum")
        self.check_positive("pack")
        if self.batch_size % self.pack:
            self._fail("pack", f"must divide batch_size ({self.batch_size}), got {self.pack}")

    @classmethod
    def tiny(cls) -> "DemoConfig":
        """The recipe's run: the image side warmed up for 1,500 steps on fresh exhibits at learning rate
        3e-3 (at 1e-3 the ViT reads barely half of the cells' shapes after as many steps, §5.7) — that
        warm-up is committed as ``clip-cells-tiny`` and loaded — then 3,000 LM steps at a high learning
        rate (QK-norm keeps it stable) with AdamW β2 = 0.95."""
        return cls(steps=3000, encoder_steps=1500, encoder_fresh=True, warmup=100, caption_frac=0.0, lr=1e-2,
                   beta2=0.95, encoder_artifact="clip-cells-tiny")

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


def train_route(route: str, vlm_cfg: VLMConfig | None = None, demo: DemoConfig | None = None,
                train: QAData | None = None, device: str | None = None,
                encoder: PatchEncoder | tuple | None = None, eval_data: QAData | None = None,
                eval_every: int = 0, callback: Callable[[int, VisionLanguageModel], None] | None = None,
                loss: Callable | None = None) -> tuple[VisionLanguageModel, list[dict]]:
    """Build and train one route on museum QA; returns ``(model, history)``. §5.7.

    With ``demo.encoder_steps`` (or a warmed-up ``encoder`` to share between routes: a
    :class:`PatchEncoder`, or ``(vision, compressor)`` from :func:`clip_encoder`) the image side
    starts from per-cell labels; with ``demo.freeze_encoder`` it then stays fixed and its
    features are computed once, so each step costs only the projector and the LM. A model with
    ``image_side='features'`` reads the data's ``features`` (oracle cell features by default).
    With ``eval_data``, held-out accuracy (teacher-forced, cheap) is measured every ``eval_every``
    steps, and greedy accuracy at the end, and kept as the model's ``training_log`` (saved with
    it). ``callback(step, model)`` runs before each step, outside the loss function. ``loss``
    replaces :func:`answer_loss` (same signature; Chapter 6's distillation passes its own).
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
            # the compressor was trained with the ViT: both stay as the warm-up left them, so the
            # image tokens before the projector are computed once (the same numbers, bit for bit,
            # as running both every step: a test checks it) and each step costs the projector and
            # the LM only
            vlm.encoder.requires_grad_(False)
            train.features = encode_all(vlm.encoder, train.images)
            if vlm.compressor is not None:
                vlm.compressor.requires_grad_(False)
                train.compressed, train.features = encode_all(vlm.compressor, train.features), None
    b = Batcher(vlm, train, demo.batch_size, demo.seed, demo.caption_frac, demo.curriculum, demo.pack)
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

    hist = fit(vlm, loss or answer_loss, batch_fn, loop, device=device, desc=f"vlm-{route}",
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
