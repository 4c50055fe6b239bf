"""Teaching a VLM to answer museum questions: data, loss on answers only, evaluation (Chapter 5 §5.7).

Questions, answers and images come from :class:`vlmbook.data.Museum`. Training minimises the
next-token loss on the answer tokens (and ``<|end|>``) only; held-out accuracy is the exact
match of the greedy answer, computed in one teacher-forced pass: greedy decoding returns exactly
the reference answer iff the arg-max at every answer position equals the reference token.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..config import Config
from ..data.museum import (COLOUR_NAMES, QUESTION_TYPES, RELATIONAL_TYPES, SHAPES, SINGLE_OBJECT_TYPES, SIZE_NAMES,
                           Museum, generate_scene)
from ..loop import LoopConfig, fit
from .continuous import PatchEncoder
from .model import VisionLanguageModel, VLMConfig

#: Question types left out of the demo: plaque digits are a few pixels tall at 64–72 px and unreadable.
EXCLUDED_TYPES = ("plaque",)


@dataclasses.dataclass
class QAData:
    """Images (n, 3, H, W) in [0, 1] and QA items ``(image index, question, answer, qtype)``.

    ``codes`` (discrete route) and ``features`` (a frozen encoder's output) are filled in once,
    so that training does not recompute them every step.
    """

    images: torch.Tensor
    items: list[tuple[int, str, str, str]]
    codes: torch.Tensor | None = None
    captions: list[str] | None = None
    features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.items)


def museum_qa(split: str, n_scenes: int, size: int = 64, start: int = 0,
              exclude: Sequence[str] = EXCLUDED_TYPES) -> QAData:
    """Every question of ``n_scenes`` museum exhibits (minus ``exclude`` types) with their images. §5.7."""
    if n_scenes < 1:
        raise ValueError(f"n_scenes must be >= 1, got {n_scenes}")
    bad = set(exclude) - set(QUESTION_TYPES)
    if bad:
        raise ValueError(f"unknown question types {sorted(bad)}; known: {QUESTION_TYPES}")
    m = Museum(split, size=size, length=start + n_scenes)
    items, caps = [], []
    for i in range(n_scenes):
        s = m[start + i]
        items += [(i, qa.question, qa.answer, qa.qtype) for qa in s.qas if qa.qtype not in exclude]
        caps.append(s.caption)
    return QAData(m.tensors(start, n_scenes), items, captions=caps)


#: The instruction that asks for a caption (captioning is trained alongside QA).
CAPTION_PROMPT = "Describe the exhibit."


class Batcher:
    """Pre-tokenised QA items -> padded batches; ``batch(step)`` is a pure function of the step."""

    def __init__(self, vlm: VisionLanguageModel, data: QAData, batch_size: int = 64, seed: int = 0,
                 caption_frac: float = 0.0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= caption_frac < 1.0:
            raise ValueError(f"caption_frac must lie in [0, 1), got {caption_frac}")
        if caption_frac and not data.captions:
            raise ValueError("caption_frac > 0 needs data with captions")
        self.batch_size, self.seed, self.caption_frac = batch_size, seed, caption_frac
        self.pad = vlm.ids["pad"]
        qcache: dict[str, list[int]] = {}
        acache: dict[str, list[int]] = {}
        self.seqs, self.answer_len = [], []
        for _, q, a, _ in data.items:
            if q not in qcache:
                qcache[q] = vlm.encode_text(q)
            if a not in acache:
                acache[a] = vlm.encode_text(" " + a)
            ids = vlm.prompt_ids(qcache[q], acache[a])
            self.seqs.append(ids)
            self.answer_len.append(len(acache[a]) + 1)
        self.image_of = [it[0] for it in data.items]
        self.n_qa = len(self.seqs)
        if caption_frac:
            q = vlm.encode_text(CAPTION_PROMPT)
            for i, c in enumerate(data.captions):
                a = vlm.encode_text(" " + c)
                self.seqs.append(vlm.prompt_ids(q, a))
                self.answer_len.append(len(a) + 1)
                self.image_of.append(i)
        # The batches carry only what this model reads, on a private copy of the data: codes from
        # this model's quantizer belong to it, not to a test set that other models share.
        if vlm.config.route == "discrete":
            codes = data.codes
            if codes is None:
                codes = torch.cat([vlm.quantizer.encode(data.images[i:i + 512]) for i in range(0, len(data.images), 512)])
            self.data = dataclasses.replace(data, codes=codes, features=None)
        else:
            self.data = dataclasses.replace(data, codes=None)

    def collate(self, idx: Sequence[int]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids``, boolean ``targets`` (positions predicting answer tokens), ``labels``,
        and the image side: cached ``codes`` and/or ``features`` if the data holds them, else ``images``."""
        T = max(len(self.seqs[i]) for i in idx)
        ids = torch.full((len(idx), T), self.pad, dtype=torch.long)
        targets = torch.zeros(len(idx), T, dtype=torch.bool)
        for r, i in enumerate(idx):
            s = self.seqs[i]
            ids[r, :len(s)] = torch.tensor(s)
            targets[r, len(s) - 1 - self.answer_len[i]:len(s) - 1] = True  # position t predicts token t + 1
        labels = torch.roll(ids, -1, 1)[targets]
        img = torch.tensor([self.image_of[i] for i in idx])
        out = {"input_ids": ids, "targets": targets, "labels": labels}
        # cached codes or features stand in for the images: gathering (and moving) pixels that the
        # model will not read would cost every step
        if self.data.codes is not None:
            out["codes"] = self.data.codes[img]
        if self.data.features is not None:
            out["features"] = self.data.features[img]
        if "codes" not in out and "features" not in out:
            out["images"] = self.data.images[img]
        return out

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        n_cap = int(round(self.batch_size * self.caption_frac))
        idx = torch.randint(self.n_qa, (self.batch_size - n_cap,), generator=g).tolist()
        if n_cap:
            idx += (self.n_qa + torch.randint(len(self.seqs) - self.n_qa, (n_cap,), generator=g)).tolist()
        return self.collate(idx)


def answer_loss(model: VisionLanguageModel, batch: dict, step: int = 0):
    """Cross-entropy on answer tokens only (``loop.fit`` loss function). §5.7."""
    logits = model(batch["input_ids"], images=batch.get("images"), codes=batch.get("codes"), positions=batch["targets"],
                   features=batch.get("features"))
    loss = F.cross_entropy(logits.float(), batch["labels"])
    acc = (logits.argmax(-1) == batch["labels"]).float().mean()
    return loss, {"token_acc": float(acc)}


@torch.no_grad()
def evaluate(vlm: VisionLanguageModel, data: QAData, batch_size: int = 256) -> dict[str, float]:
    """Exact-match accuracy (%) overall, per question type, single-object and relational. §5.7."""
    vlm.eval()
    b = Batcher(vlm, data, batch_size)
    correct = torch.zeros(len(data), dtype=torch.bool)
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(s + batch_size, len(data))))
        batch = b.collate(idx)
        dev = vlm._device()
        image_side = {k: batch[k].to(dev) for k in ("images", "codes", "features") if k in batch}
        logits = vlm(batch["input_ids"].to(dev), positions=batch["targets"].to(dev), **image_side)
        ok = (logits.argmax(-1).cpu() == batch["labels"])
        rows = torch.arange(len(idx))[:, None].expand_as(batch["targets"])[batch["targets"]]
        correct[s:s + len(idx)] = ~torch.zeros(len(idx), dtype=torch.bool).index_put_((rows,), ~ok, accumulate=True)
    return accuracy_by_type(correct, [it[3] for it in data.items])


def majority_baseline(train: QAData, test: QAData) -> dict[str, float]:
    """Accuracy (%) of answering every question with its type's most frequent training answer. §5.7.

    The score a model reaches without looking at the image: a route must beat it to show it reads
    the image at all.
    """
    from collections import Counter

    best = {}
    for t in {it[3] for it in train.items}:
        best[t] = Counter(it[2] for it in train.items if it[3] == t).most_common(1)[0][0]
    correct = torch.tensor([best.get(it[3]) == it[2] for it in test.items])
    return accuracy_by_type(correct, [it[3] for it in test.items])


def accuracy_by_type(correct: torch.Tensor, types: list[str]) -> dict[str, float]:
    """Accuracy (%) overall, per question type, and for single-object and relational groups. §5.7."""
    out = {"all": _pct(correct)}
    groups = [(t, (t,)) for t in QUESTION_TYPES] + [("single", SINGLE_OBJECT_TYPES), ("relational", RELATIONAL_TYPES)]
    for name, group in groups:
        sel = torch.tensor([x in group for x in types])
        if sel.any():
            out[name] = _pct(correct[sel])
    return out


def _pct(x: torch.Tensor) -> float:
    return round(100.0 * float(x.float().mean()), 2)


@dataclasses.dataclass
class DemoConfig(Config):
    """The training demo: data sizes, optimiser and steps per route."""

    train_scenes: int = 2000
    test_scenes: int = 200
    steps: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 30
    caption_frac: float = 0.25
    encoder_steps: int = 0
    freeze_encoder: bool = True
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("train_scenes", "test_scenes", "steps", "batch_size", "lr")
        self.check_non_negative("encoder_steps")

    @classmethod
    def tiny(cls) -> "DemoConfig":
        """The chapter's run: a 400-step encoder warm-up shared by the routes, then 1,200 LM steps each."""
        return cls(steps=1200, encoder_steps=400, warmup=100, caption_frac=0.0)

    @classmethod
    def offline(cls) -> "DemoConfig":
        """The committed ``vlm-tiny`` artifact's run: the tiny recipe for 15,000 LM steps (one core, ~10 min)."""
        return cls.tiny().replace(steps=15000, warmup=300)

    @classmethod
    def base(cls) -> "DemoConfig":
        return cls(train_scenes=20000, test_scenes=1000, steps=6000, batch_size=128, lr=1e-3, warmup=300,
                   caption_frac=0.25, encoder_steps=2000)


def warm_encoder(cfg: VLMConfig, demo: DemoConfig, train: QAData, device: str | None = None) -> PatchEncoder:
    """A :class:`PatchEncoder` for ``cfg`` warmed up on the per-patch labels of ``train``'s exhibits. §5.7."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(demo.seed + 1)
        enc = PatchEncoder(cfg.hidden, cfg.grid, cfg.enc_channels)
    pretrain_encoder(enc, train.images, patch_labels("train", len(train.images), cfg.grid), demo.encoder_steps,
                     demo.batch_size, demo.lr, demo.seed, device)
    return enc.cpu()


@torch.no_grad()
def encode_all(encoder: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(n, 3, H, W) -> (n, N, D) encoder features, computed once for a frozen encoder."""
    dev = next(encoder.parameters()).device
    return torch.cat([encoder(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])


def train_route(route: str, vlm_cfg: VLMConfig | None = None, demo: DemoConfig | None = None,
                train: QAData | None = None, device: str | None = None,
                encoder: PatchEncoder | None = None, eval_data: QAData | None = None,
                eval_every: int = 0) -> tuple[VisionLanguageModel, list[dict]]:
    """Build and train one route on museum QA; returns ``(model, history)``. §5.7.

    With ``demo.encoder_steps`` (or a warmed-up ``encoder`` to share between routes) the image
    encoder starts from per-patch labels; with ``demo.freeze_encoder`` it then stays fixed and its
    features are computed once, so each step costs only the projector and the LM. With
    ``eval_data``, held-out accuracy is measured every ``eval_every`` steps and at the end, and
    kept as the model's ``training_log`` (saved with it).
    """
    if eval_every < 0 or (eval_every and eval_data is None):
        raise ValueError(f"eval_every must be >= 0 and needs eval_data, got {eval_every} with "
                         f"{'no ' if eval_data is None else ''}eval_data")
    demo = demo or DemoConfig.tiny()
    cfg = (vlm_cfg or VLMConfig.tiny()).replace(route=route, seed=demo.seed)
    vlm = VisionLanguageModel(cfg)
    if train is None:
        train = museum_qa("train", demo.train_scenes, cfg.image_size)
    train = dataclasses.replace(train, codes=None, features=None)
    if route == "discrete":
        vlm.quantizer.fit(train.images[:1000], seed=demo.seed)
    elif encoder is not None or demo.encoder_steps:
        encoder = encoder if encoder is not None else warm_encoder(cfg, demo, train, device)
        vlm.encoder.load_state_dict(encoder.state_dict())
        if demo.freeze_encoder:
            vlm.encoder.requires_grad_(False)
            train.features = encode_all(vlm.encoder, train.images)
    b = Batcher(vlm, train, demo.batch_size, demo.seed, demo.caption_frac)
    loop = LoopConfig(steps=demo.steps, lr=demo.lr, warmup=demo.warmup, weight_decay=0.01, seed=demo.seed,
                      log_every=max(1, demo.steps // 20))
    log: list[dict] = []

    def loss_fn(model: VisionLanguageModel, batch: dict, step: int):
        if eval_every and step and step % eval_every == 0:
            log.append({"step": step, **evaluate(model, eval_data)})
            model.train()
        return answer_loss(model, batch, step)

    hist = fit(vlm, loss_fn, b.batch, loop, device=device, desc=f"vlm-{route}")
    if eval_data is not None:
        log.append({"step": demo.steps, **evaluate(vlm, eval_data)})
        vlm.training_log = log
    return vlm, hist


def build_vlm_tiny(seed: int = 0) -> VisionLanguageModel:
    """Artifact ``vlm-tiny``: the continuous route of ``VLMConfig.tiny()`` trained with
    ``DemoConfig.offline()`` on one thread, scored on the 200 test exhibits every 1,500 steps. §5.7."""
    from ..device import num_threads

    demo = DemoConfig.offline().replace(seed=seed)
    cfg = VLMConfig.tiny()
    with num_threads(1):
        test = museum_qa("test", demo.test_scenes, cfg.image_size)
        vlm, _ = train_route("continuous", cfg, demo, device="cpu", eval_data=test, eval_every=demo.steps // 10)
    return vlm.eval()


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


@torch.no_grad()
def latency(vlm: VisionLanguageModel, image: torch.Tensor, question: str, new_tokens: int = 16) -> dict[str, float]:
    """Time to first token (prefill, ms) and decoding speed (tokens/s) for one question. §5.6."""
    q = torch.tensor([vlm.encode_text(question) + [vlm.ids["assistant"]]])
    img = image[None].to(vlm._device())
    vlm.generate(img, q, max_new_tokens=1)  # warm up
    t0 = time.perf_counter()
    vlm.generate(img, q, max_new_tokens=1)
    ttft = time.perf_counter() - t0
    end = vlm.ids["end"]
    vlm.ids["end"] = -1  # decode a fixed number of tokens: never stop early
    try:
        t0 = time.perf_counter()
        out = vlm.generate(img, q, max_new_tokens=new_tokens)
        total = time.perf_counter() - t0
    finally:
        vlm.ids["end"] = end
    return {"ttft_ms": 1000 * ttft, "tokens_per_s": (out.shape[1] - 1) / max(total - ttft, 1e-9)}


def patch_labels(split: str, n_scenes: int, grid: int, start: int = 0) -> torch.Tensor:
    """(n, grid², 3) int64 (colour, shape, size) of the object centred in each patch; 0 = empty."""
    out = torch.zeros(n_scenes, grid * grid, 3, dtype=torch.long)
    for i in range(n_scenes):
        for o in generate_scene(split, start + i).objects:
            k = min(int(o.cy * grid), grid - 1) * grid + min(int(o.cx * grid), grid - 1)
            out[i, k] = torch.tensor([COLOUR_NAMES.index(o.colour) + 1, SHAPES.index(o.shape) + 1,
                                      SIZE_NAMES.index(o.size) + 1])
    return out


class _Probe(torch.nn.Module):
    def __init__(self, encoder: torch.nn.Module, dim: int):
        super().__init__()
        self.encoder = encoder
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, n + 1) for n in (len(COLOUR_NAMES), len(SHAPES),
                                                                                  len(SIZE_NAMES)))


def pretrain_encoder(encoder: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 200,
                     batch_size: int = 64, lr: float = 3e-3, seed: int = 0, device: str | None = None) -> list[dict]:
    """Warm up an image encoder on per-patch (colour, shape, size) labels before fusion. §5.7.

    Stands in for Chapter 4's pretrained encoders: the LM then starts from features in which the
    museum's attributes are linearly readable.
    """
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} label rows")
    with torch.no_grad():
        dim = encoder(images[:1]).shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = _Probe(encoder, dim)

    def batch_fn(step: int):
        g = torch.Generator().manual_seed(seed * 7919 + step)
        idx = torch.randint(len(images), (batch_size,), generator=g)
        return {"images": images[idx], "labels": labels[idx]}

    def loss_fn(model, batch, step):
        f = model.encoder(batch["images"])
        losses = [F.cross_entropy(h(f).flatten(0, 1), batch["labels"][..., j].flatten()) for j, h in enumerate(model.heads)]
        return sum(losses)

    loop = LoopConfig(steps=steps, lr=lr, warmup=min(20, steps // 5), seed=seed, log_every=max(1, steps // 10))
    return fit(probe, loss_fn, batch_fn, loop, device=device, desc="encoder")
