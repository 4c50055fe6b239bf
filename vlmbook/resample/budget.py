"""Choosing the token budget M: a museum probe across M, the fit Q(M) = a - b / (M + c), and M*.

The probe is a miniature of the museum guide: frozen patch features of an exhibit are
compressed to M tokens, a question is appended, and a small transformer answers it from the
question's first token. Compressor and probe head are trained together for a few hundred
steps; accuracy on held-out exhibits, measured for several M, traces how much each extra image
token buys. Chapter 4 §4.6.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.museum import COLOUR_NAMES, LOCATIONS, SHAPES, Museum, questions
from ..loop import LoopConfig, fit
from .compressors import CompressorConfig, make_compressor
from .layers import Block
from .positions import sincos_1d

#: The probe's question types: attributes (colour, shape, exists), count, and relations (locate, spatial).
PROBE_TYPES: tuple[str, ...] = ("colour", "shape", "exists", "count", "locate", "spatial")
ANSWERS: tuple[str, ...] = tuple(COLOUR_NAMES) + tuple(SHAPES) + tuple(str(k) for k in range(7)) + ("yes", "no") \
    + tuple(LOCATIONS)
_ANSWER_ID = {a: i for i, a in enumerate(ANSWERS)}


@dataclasses.dataclass
class ProbeConfig(Config):
    """Sizes and schedule of the token-budget probe."""

    n_train: int = 3000
    n_test: int = 500
    dim: int = 64
    depth: int = 2
    heads: int = 4
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("n_train", "n_test", "dim", "depth", "heads", "steps", "batch_size", "lr")
        self.check_divisible("dim", self.heads, "heads")

    @classmethod
    def tiny(cls) -> "ProbeConfig":
        return cls()

    @classmethod
    def base(cls) -> "ProbeConfig":
        return cls(n_train=20000, n_test=2000, dim=128, depth=3, steps=3000, batch_size=256, lr=1e-3)


@dataclasses.dataclass
class ProbeData:
    """Frozen features of S exhibits and their Q questions (ids, answers, types, owning exhibit)."""

    features: torch.Tensor  # (S, N, D)
    question_ids: torch.Tensor  # (Q, L)
    question_mask: torch.Tensor  # (Q, L)
    scene: torch.Tensor  # (Q,) index into features
    answer: torch.Tensor  # (Q,) index into ANSWERS
    qtype: list[str]

    def __len__(self) -> int:
        return int(self.answer.shape[0])


@torch.no_grad()
def probe_features(encoder, split: str, n: int, types: Sequence[str] = PROBE_TYPES, batch: int = 250) -> ProbeData:
    """Compute frozen ``encoder.patch_features`` of n exhibits once, with their probe questions. §4.6."""
    from ..vision.text import MuseumTokenizer

    bad = [t for t in types if t not in PROBE_TYPES]
    if bad:
        raise ValueError(f"probe question types must come from {PROBE_TYPES}, got {bad}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    size = encoder.config.image_size
    museum = Museum(split, size=size, length=n)
    dev = next(encoder.parameters()).device
    feats = torch.cat([encoder.patch_features(museum.tensors(s, min(batch, n - s)).to(dev)).cpu()
                       for s in range(0, n, batch)])
    texts, scene, answer, qtype = [], [], [], []
    for i in range(n):
        for qa in questions(museum.scene(i)):
            if qa.qtype in types:
                texts.append(qa.question)
                scene.append(i)
                answer.append(_ANSWER_ID[qa.answer])
                qtype.append(qa.qtype)
    ids, mask = MuseumTokenizer().encode(texts)
    return ProbeData(feats, ids, mask, torch.tensor(scene), torch.tensor(answer), qtype)


class ProbeHead(nn.Module):
    """[image tokens; question words] -> transformer -> answer logits read at the question's <cls>."""

    def __init__(self, token_dim: int, cfg: ProbeConfig, vocab_size: int, max_len: int = 40):
        super().__init__()
        self.img = nn.Linear(token_dim, cfg.dim)
        self.word = nn.Embedding(vocab_size, cfg.dim)
        self.kind = nn.Parameter(torch.zeros(2, cfg.dim))  # which segment: image or text
        self.register_buffer("pos", sincos_1d(max_len, cfg.dim), persistent=False)
        self.blocks = nn.ModuleList([Block(cfg.dim, cfg.heads) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, len(ANSWERS))

    def forward(self, tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens (B, M, D'), ids/mask (B, L) -> (B, |ANSWERS|) logits."""
        m = tokens.shape[1]
        x = torch.cat([self.img(tokens) + self.kind[0], self.word(ids) + self.pos[: ids.shape[1]] + self.kind[1]], 1)
        key_mask = torch.cat([mask.new_ones(mask.shape[0], m), mask], 1)
        for blk in self.blocks:
            x = blk(x, key_mask=key_mask)
        return self.out(self.norm(x[:, m]))


class ProbeModel(nn.Module):
    """A compressor (or ``None``: all N tokens pass) followed by the probe head."""

    def __init__(self, compressor: nn.Module | None, head: ProbeHead):
        super().__init__()
        self.compressor, self.head = compressor, head

    def forward(self, feats: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = feats if self.compressor is None else self.compressor(feats)
        return self.head(tokens, ids, mask)


def _batch(data: ProbeData, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"feats": data.features[data.scene[idx]], "ids": data.question_ids[idx],
            "mask": data.question_mask[idx], "answer": data.answer[idx]}


def make_probe(kind: str, m: int, n: int, d: int, cfg: ProbeConfig) -> ProbeModel:
    """Compressor ``kind`` to M tokens (``"all"`` keeps all N) + a fresh probe head, seeded by cfg.seed."""
    from ..vision.text import MuseumTokenizer

    torch.manual_seed(cfg.seed)
    if kind == "all":
        comp = None
    else:
        comp = make_compressor(CompressorConfig(kind=kind, in_dim=d, dim=cfg.dim, out_dim=cfg.dim, num_tokens=m,
                                                in_tokens=n, depth=1, heads=cfg.heads))
    return ProbeModel(comp, ProbeHead(d if comp is None else cfg.dim, cfg, len(MuseumTokenizer())))


@torch.no_grad()
def evaluate_probe(model: ProbeModel, data: ProbeData, batch: int = 1024) -> dict[str, float]:
    """Accuracy overall and per question type on ``data``."""
    model.eval()
    preds = []
    for s in range(0, len(data), batch):
        b = _batch(data, torch.arange(s, min(s + batch, len(data))))
        preds.append(model(b["feats"], b["ids"], b["mask"]).argmax(-1))
    correct = (torch.cat(preds) == data.answer).float().numpy()
    types = np.array(data.qtype)
    out = {"accuracy": float(correct.mean())}
    for t in dict.fromkeys(data.qtype):
        out[t] = float(correct[types == t].mean())
    return out


def probe_accuracy(kind: str, m: int, train: ProbeData, test: ProbeData, cfg: ProbeConfig | None = None
                   ) -> dict[str, float]:
    """Train compressor ``kind`` (M tokens) + probe head on ``train``; accuracy on ``test``. §4.6."""
    cfg = cfg or ProbeConfig.tiny()
    _, n, d = train.features.shape
    model = make_probe(kind, m, n, d, cfg)

    def batch_fn(step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        return _batch(train, torch.randint(len(train), (cfg.batch_size,), generator=g))

    def loss_fn(mdl: nn.Module, b: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return F.cross_entropy(mdl(b["feats"], b["ids"], b["mask"]), b["answer"])

    loop = LoopConfig(steps=cfg.steps, lr=cfg.lr, warmup=min(20, cfg.steps // 10), seed=cfg.seed, log_every=50)
    fit(model, loss_fn, batch_fn, loop, device="cpu", desc=f"probe {kind} M={m}")
    return {"kind": kind, "M": m if kind != "all" else n, **evaluate_probe(model, test)}


def valid_budgets(kind: str, n: int, ms: Sequence[int]) -> list[int]:
    """The budgets in ``ms`` that compressor ``kind`` can produce from N tokens."""
    out = []
    for m in ms:
        if not 1 <= m <= n:
            continue
        if kind == "pixel_shuffle":
            g, r2 = math.isqrt(n), n // m
            r = math.isqrt(r2)
            if n % m or r * r != r2 or g % r:
                continue
        out.append(m)
    return out


def budget_sweep(kinds: Sequence[str], ms: Sequence[int], train: ProbeData, test: ProbeData,
                 cfg: ProbeConfig | None = None) -> list[dict[str, float]]:
    """Probe accuracy for every compressor and every budget it can produce; plus ``"all"`` N tokens. §4.6."""
    rows = []
    n = train.features.shape[1]
    for kind in kinds:
        if kind == "all":
            rows.append(probe_accuracy("all", n, train, test, cfg))
            continue
        for m in valid_budgets(kind, n, ms):
            rows.append(probe_accuracy(kind, m, train, test, cfg))
    return rows


# ---------------------------------------------------------------------------------------
# Q(M) = a - b / (M + c) and the choice of M*
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BudgetCurve:
    """Q(M) = a - b / (M + c): a is the accuracy with unlimited tokens, b/(M+c) what M tokens lose."""

    a: float
    b: float
    c: float
    rmse: float = 0.0

    def __call__(self, m):
        """Q(M) for a number or an array of budgets."""
        return self.a - self.b / (np.asarray(m, dtype=float) + self.c)


def fit_budget_curve(ms: Sequence[float], accs: Sequence[float], c_max: float = 256.0) -> BudgetCurve:
    """Least-squares fit of Q(M) = a - b / (M + c), c in [0, c_max], b >= 0. Chapter 4 §4.6.

    For a fixed c the model is linear in (a, b), so the fit scans c on a fine log grid and solves
    the 2 x 2 least-squares problem in closed form: deterministic, no starting point needed.
    """
    m = np.asarray(ms, dtype=float)
    q = np.asarray(accs, dtype=float)
    if m.ndim != 1 or m.shape != q.shape:
        raise ValueError(f"ms and accs must be 1-D of equal length, got {m.shape} and {q.shape}")
    if len(m) < 3:
        raise ValueError(f"fitting three parameters needs at least 3 budgets, got {len(m)}")
    if np.any(m < 1) or not np.all(np.isfinite(q)):
        raise ValueError("budgets must be >= 1 and accuracies finite")
    best = None
    for c in np.concatenate([[0.0], np.geomspace(1e-3, c_max, 2000)]):
        u = -1.0 / (m + c)
        a_mat = np.stack([np.ones_like(m), u], 1)
        (a, b), *_ = np.linalg.lstsq(a_mat, q, rcond=None)
        if b < 0:  # more tokens must not hurt: clamp to the flat fit
            a, b = q.mean(), 0.0
        err = float(np.sqrt(np.mean((a - b / (m + c) - q) ** 2)))
        if best is None or err < best[3] - 1e-12:
            best = (float(a), float(b), float(c), err)
    return BudgetCurve(*best)


def choose_budget(context: int, text_len: int, curve: BudgetCurve, tolerance: float = 0.01,
                  allowed: Sequence[int] | None = None) -> int:
    """M*: the fewest image tokens whose predicted accuracy is within ``tolerance`` of the best
    that fits the context (M + text_len <= context). ``allowed`` limits M to budgets a compressor
    can produce. Chapter 4 §4.6."""
    for name, v in (("context", context), ("text_len", text_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    room = int(context) - int(text_len)
    cands = sorted({int(m) for m in (allowed if allowed is not None else range(1, max(room, 0) + 1)) if 1 <= m <= room})
    if not cands:
        raise ValueError(f"no image budget fits: context {context} - text {text_len} leaves {room} tokens"
                         + ("" if allowed is None else f" and the allowed budgets are {sorted(allowed)}"))
    best = float(curve(cands[-1]))
    for m in cands:
        if float(curve(m)) >= best - tolerance:
            return m
    return cands[-1]
