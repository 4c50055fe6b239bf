"""Choosing the token budget M: a museum probe across M, the fit Q(M) = a - b / (M + c), and M*.

The probe is a miniature of the museum guide: frozen patch features of an exhibit are
compressed to M tokens, and a small head answers a fixed set of visitor questions from them —
the colour and shape in each part of the wall (attributes), how many objects there are
(count), and which side holds more (relations). Compressor and head are trained together for a
few hundred steps; accuracy on held-out exhibits, measured for several M, traces how much each
extra image token buys. Chapter 4 §4.6.
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
from ..data.museum import COLOUR_NAMES, LOCATIONS, SHAPES, Museum
from ..loop import LoopConfig, fit
from ..util import step_generator
from .compressors import CompressorConfig, make_compressor

#: The probe's question groups: attributes of each grid cell, a count, and relations between regions.
PROBE_GROUPS: tuple[str, ...] = ("attribute", "count", "relation")
_NOTHING = "nothing"
_CELL_COLOUR = (_NOTHING,) + tuple(COLOUR_NAMES)
_CELL_SHAPE = (_NOTHING,) + tuple(SHAPES)
_COUNTS = tuple(str(k) for k in range(7))
_SIDES = (("left", "right"), ("top", "bottom"))
_MORE = ("first", "second", "same")


def probe_questions() -> list[tuple[str, str, tuple[str, ...]]]:
    """The fixed questions every exhibit answers: (question, group, possible answers). §4.6.

    18 attribute questions (the colour and the shape in each of the 9 grid cells, or 'nothing'),
    one count, and 2 relations (which of two opposite sides holds more objects).
    """
    qs: list[tuple[str, str, tuple[str, ...]]] = []
    for cell, loc in enumerate(LOCATIONS):
        qs.append((f"What colour is the object at the {loc}?", "attribute", _CELL_COLOUR))
        qs.append((f"What shape is the object at the {loc}?", "attribute", _CELL_SHAPE))
    qs.append(("How many objects are in the exhibit?", "count", _COUNTS))
    for a, b in _SIDES:
        qs.append((f"Which holds more objects, the {a} or the {b}?", "relation", _MORE))
    return qs


def probe_answers(scene) -> list[str]:
    """The true answer to each of :func:`probe_questions` for one museum scene."""
    by_cell = {o.cell: o for o in scene.objects}
    out: list[str] = []
    for cell in range(9):
        o = by_cell.get(cell)
        out += [o.colour, o.shape] if o else [_NOTHING, _NOTHING]
    out.append(str(len(scene.objects)))
    cols = [o.cell % 3 for o in scene.objects]
    rows = [o.cell // 3 for o in scene.objects]
    for first, second in ((cols.count(0), cols.count(2)), (rows.count(0), rows.count(2))):
        out.append("first" if first > second else "second" if second > first else "same")
    return out


@dataclasses.dataclass
class ProbeConfig(Config):
    """Sizes and schedule of the token-budget probe."""

    n_train: int = 3000
    n_test: int = 500
    dim: int = 64
    hidden: int = 256
    heads: int = 4
    steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    positions: bool = True

    def validate(self) -> None:
        super().validate()
        self.check_positive("n_train", "n_test", "dim", "hidden", "heads", "steps", "batch_size", "lr")
        self.check_divisible("dim", self.heads, "heads")

    @classmethod
    def tiny(cls) -> "ProbeConfig":
        return cls()

    @classmethod
    def base(cls) -> "ProbeConfig":
        return cls(n_train=20000, n_test=2000, dim=128, hidden=512, steps=3000, batch_size=256, lr=1e-3)

    def loop(self) -> LoopConfig:
        """The :class:`LoopConfig` every probe trains with."""
        return LoopConfig(steps=self.steps, lr=self.lr, warmup=min(20, self.steps // 10), seed=self.seed,
                          log_every=50, weight_decay=0.01)


@dataclasses.dataclass
class ProbeData:
    """Frozen features of S exhibits (S, N, D) and their answers (S, Q) to :func:`probe_questions`."""

    features: torch.Tensor
    answers: torch.Tensor

    def __len__(self) -> int:
        return int(self.answers.shape[0])


@torch.no_grad()
def probe_features(encoder, split: str, n: int, batch: int = 250) -> ProbeData:
    """Compute frozen ``encoder.patch_features`` of n exhibits once, with their probe answers. §4.6."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    museum = Museum(split, size=encoder.config.image_size, length=n)
    dev = next(encoder.parameters()).device
    feats = torch.cat([encoder.patch_features(museum.tensors(s, min(batch, n - s)).to(dev)).cpu()
                       for s in range(0, n, batch)])
    qs = probe_questions()
    rows = [[q[2].index(a) for q, a in zip(qs, probe_answers(museum.scene(i)))] for i in range(n)]
    return ProbeData(feats, torch.tensor(rows, dtype=torch.long))


class ProbeHead(nn.Module):
    """A small MLP reading all M tokens (flattened) and answering every probe question at once."""

    def __init__(self, m: int, token_dim: int, hidden: int):
        super().__init__()
        self.sizes = [len(q[2]) for q in probe_questions()]
        self.net = nn.Sequential(nn.LayerNorm(token_dim), nn.Flatten(1), nn.Linear(m * token_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, sum(self.sizes)))

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """(B, M, D') -> one (B, n_answers) logit tensor per question."""
        return list(self.net(tokens).split(self.sizes, dim=-1))


class ProbeModel(nn.Module):
    """A compressor (or ``None``: all N tokens pass) followed by the probe head."""

    def __init__(self, compressor: nn.Module | None, head: ProbeHead):
        super().__init__()
        self.compressor, self.head = compressor, head

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        return self.head(feats if self.compressor is None else self.compressor(feats))


def make_probe(kind: str, m: int, n: int, d: int, cfg: ProbeConfig) -> ProbeModel:
    """Compressor ``kind`` to M tokens (``"all"`` keeps all N) + a fresh probe head, seeded by cfg.seed."""
    torch.manual_seed(cfg.seed)
    if kind == "all":
        return ProbeModel(None, ProbeHead(n, d, cfg.hidden))
    comp = make_compressor(CompressorConfig(kind=kind, in_dim=d, dim=cfg.dim, out_dim=cfg.dim, num_tokens=m,
                                            in_tokens=n, depth=1, heads=cfg.heads, positions=cfg.positions))
    return ProbeModel(comp, ProbeHead(m, cfg.dim, cfg.hidden))


def probe_loss(logits: list[torch.Tensor], answers: torch.Tensor) -> torch.Tensor:
    """Mean over questions of the cross-entropy of each question's answer."""
    return torch.stack([F.cross_entropy(lg, answers[:, q]) for q, lg in enumerate(logits)]).mean()


@torch.no_grad()
def evaluate_probe(model: ProbeModel, data: ProbeData, batch: int = 1000) -> dict[str, float]:
    """Accuracy per question group and their mean ("accuracy") on ``data``."""
    model.eval()
    preds = []
    for s in range(0, len(data), batch):
        logits = model(data.features[s:s + batch])
        preds.append(torch.stack([lg.argmax(-1) for lg in logits], 1))
    correct = (torch.cat(preds) == data.answers).float()
    groups = [q[1] for q in probe_questions()]
    out = {g: float(correct[:, [i for i, x in enumerate(groups) if x == g]].mean()) for g in PROBE_GROUPS}
    return {"accuracy": float(np.mean([out[g] for g in PROBE_GROUPS])), **out}


def majority_accuracy(train: ProbeData, test: ProbeData) -> dict[str, float]:
    """The same scores for always giving each question's most common training answer."""
    best = torch.mode(train.answers, dim=0).values
    correct = (test.answers == best[None]).float()
    groups = [q[1] for q in probe_questions()]
    out = {g: float(correct[:, [i for i, x in enumerate(groups) if x == g]].mean()) for g in PROBE_GROUPS}
    return {"accuracy": float(np.mean([out[g] for g in PROBE_GROUPS])), **out}


def probe_accuracy(kind: str, m: int, train: ProbeData, test: ProbeData, cfg: ProbeConfig | None = None,
                   return_model: bool = False):
    """Train compressor ``kind`` (M tokens) + probe head on ``train``; accuracy on ``test``. §4.6.

    Returns a dict (kind, M, accuracy and accuracy per question group), and the trained
    :class:`ProbeModel` too when ``return_model``.
    """
    cfg = cfg or ProbeConfig.tiny()
    _, n, d = train.features.shape
    model = make_probe(kind, m, n, d, cfg)

    def batch_fn(step: int) -> dict[str, torch.Tensor]:
        g = step_generator(cfg.seed, step)
        idx = torch.randint(len(train), (cfg.batch_size,), generator=g)
        return {"feats": train.features[idx], "answers": train.answers[idx]}

    def loss_fn(mdl: nn.Module, b: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        return probe_loss(mdl(b["feats"]), b["answers"])

    fit(model, loss_fn, batch_fn, cfg.loop(), device="cpu", desc=f"probe {kind} M={m}")
    row = {"kind": kind, "M": m if kind != "all" else n, **evaluate_probe(model, test)}
    return (row, model) if return_model else row


def valid_budgets(kind: str, n: int, ms: Sequence[int]) -> list[int]:
    """The budgets in ``ms`` that compressor ``kind`` can produce from N tokens (``"vq"``: a Chapter 2
    tokenizer's g × g code grid, the discrete route's image tokens in Chapter 7 §7.4)."""
    out = []
    for m in ms:
        if not 1 <= m <= n:
            continue
        if kind == "vq" and math.isqrt(m) ** 2 != m:
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
