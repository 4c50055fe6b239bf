"""MaskGIT: a bidirectional transformer over image codes, trained to fill masked tokens and
sampled by iterative parallel decoding with a cosine schedule (Chapter 2 §2.8; Chang et al., 2022)."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..hub import ArtifactSpec, PretrainedMixin, register_artifact
from ..loop import LoopConfig, fit
from ..util import step_generator


@dataclasses.dataclass
class MaskGITConfig(Config):
    """Transformer size and the code grid it models."""

    codebook_size: int = 256
    grid: int = 8
    dim: int = 96
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 4

    def validate(self) -> None:
        super().validate()
        for name in ("codebook_size", "grid", "dim", "depth", "heads", "mlp_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                self._fail(name, "must be an int")
        self.check_positive("codebook_size", "grid", "dim", "depth", "heads", "mlp_ratio")
        self.check_divisible("dim", self.heads, "heads")

    @classmethod
    def tiny(cls) -> "MaskGITConfig":
        return cls()

    @classmethod
    def base(cls) -> "MaskGITConfig":
        return cls(codebook_size=1024, grid=16, dim=512, depth=8, heads=8)


def cosine_schedule(r: float | torch.Tensor) -> float | torch.Tensor:
    """γ(r) = cos(π r / 2): the fraction of tokens still masked at progress r ∈ [0, 1]. §2.8."""
    if isinstance(r, torch.Tensor):
        if ((r < 0) | (r > 1)).any():
            raise ValueError("cosine_schedule needs r in [0, 1]")
        return torch.cos(math.pi / 2 * r)
    if not 0 <= r <= 1:
        raise ValueError(f"cosine_schedule needs r in [0, 1], got {r}")
    return math.cos(math.pi / 2 * r)


class MaskGIT(nn.Module, PretrainedMixin):
    """(B, N) codes with ``mask_id`` = K at hidden positions -> (B, N, K) logits. §2.8."""

    config_class = MaskGITConfig

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        self.config = config
        k, n, d = config.codebook_size, config.grid ** 2, config.dim
        self.mask_id = k
        self.tok = nn.Embedding(k + 1, d)
        self.pos = nn.Parameter(torch.randn(1, n, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, config.mlp_ratio * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, k)
        # Token and position embeddings on the same small scale (BERT / MaskGIT use std 0.02 for
        # both): with PyTorch's default N(0, 1) token embedding the position signal is 50x weaker,
        # every [MASK] looks alike, and the model predicts the same distribution at every position.
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        n = self.config.grid ** 2
        if codes.dim() == 3:
            codes = codes.flatten(1)
        if codes.dim() != 2 or codes.shape[1] != n:
            raise ValueError(f"MaskGIT needs (B, {n}) or (B, {self.config.grid}, {self.config.grid}) codes, got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.min() < 0 or codes.max() > self.mask_id:
            raise ValueError(f"codes must be integers in [0, {self.mask_id}] ({self.mask_id} = mask)")
        return self.head(self.norm(self.blocks(self.tok(codes) + self.pos)))


def random_mask(codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N) -> bool mask hiding ⌈γ(r)·N⌉ random positions per row, r ~ U(0, 1). §2.8."""
    b, n = codes.shape
    r = torch.rand(b, generator=generator)
    n_mask = torch.ceil(cosine_schedule(r) * n).clamp(1, n).long()
    ranks = torch.rand(b, n, generator=generator).argsort(1).argsort(1)
    return (ranks < n_mask[:, None]).to(codes.device)


def masked_token_loss(model: MaskGIT, codes: torch.Tensor, step: int = 0):
    """Cross-entropy on the masked positions of (B, N) or (B, h, w) codes. §2.8."""
    codes = codes.flatten(1)
    mask = random_mask(codes)
    logits = model(torch.where(mask, model.mask_id, codes))
    loss = F.cross_entropy(logits[mask], codes[mask])
    acc = (logits[mask].argmax(-1) == codes[mask]).float().mean()
    return loss, {"acc": float(acc)}


@dataclasses.dataclass
class MaskGITTrainConfig(Config):
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        self.check_positive("steps", "batch_size", "lr")

    @classmethod
    def tiny(cls) -> "MaskGITTrainConfig":
        return cls()

    @classmethod
    def base(cls) -> "MaskGITTrainConfig":
        return cls(steps=20000, batch_size=128, lr=3e-4)

    def loop(self, progress: bool = True) -> LoopConfig:
        """The :class:`LoopConfig` this recipe trains with."""
        return LoopConfig(steps=self.steps, lr=self.lr, seed=self.seed, log_every=max(1, self.steps // 10),
                          warmup=self.steps // 10, weight_decay=0.01, progress=progress)


def train_maskgit(model: MaskGIT, codes: torch.Tensor, cfg: MaskGITTrainConfig | None = None,
                  progress: bool = True) -> list[dict[str, float]]:
    """Train on a fixed set of (M, h, w) codes; batch ``s`` is a seeded shuffle slice. §2.8."""
    cfg = cfg or MaskGITTrainConfig()
    codes = codes.flatten(1).long()
    if codes.shape[1] != model.config.grid ** 2:
        raise ValueError(f"codes have {codes.shape[1]} tokens per image, model expects {model.config.grid ** 2}")
    m = codes.shape[0]

    def batch_fn(step: int) -> torch.Tensor:
        epoch, pos = divmod(step * cfg.batch_size, m)
        perm = torch.randperm(m, generator=step_generator(cfg.seed, epoch))
        idx = perm[torch.arange(pos, pos + cfg.batch_size) % m]
        return codes[idx]

    return fit(model, masked_token_loss, batch_fn, cfg.loop(progress), desc="maskgit")


#: Gumbel noise on the "which codes to keep" choice. Chang et al. use 4.5 for a model trained to a
#: low masked-token loss; our CPU-sized MaskGIT is far weaker, it is most confident of plain wall,
#: and with 4.5 each extra step keeps more of those codes, so samples grow blander past T = 4
#: (Fréchet distance of 256 samples 132-147 at T = 4, 194-213 at T = 8, 249-289 at T = 16 over three
#: initialisations; Chapter 2 §2.8). With 20 the choice stays closer to random order early on
#: and T = 4 -> 8 -> 16 improved for every initialisation tried (161-169, 151-155, 135-144).
CHOICE_TEMPERATURE = 20.0


@torch.no_grad()
def decode(model: MaskGIT, n: int = 1, steps: int = 8, temperature: float = 1.0,
           choice_temperature: float = CHOICE_TEMPERATURE,
           codes: torch.Tensor | None = None, known: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Iterative parallel decoding: start fully masked (or from ``codes`` where ``known``), at step t
    sample every hidden token, keep the most confident (log-probability plus Gumbel noise scaled by
    ``choice_temperature`` · (1 − (t+1)/T)), re-mask γ((t+1)/T) of the rest.
    Returns (n, grid, grid) codes. §2.8."""
    if steps < 1 or temperature <= 0 or choice_temperature < 0:
        raise ValueError(f"need steps >= 1, temperature > 0, choice_temperature >= 0; got {steps}, {temperature}, {choice_temperature}")
    g, nt = model.config.grid, model.config.grid ** 2
    dev = next(model.parameters()).device
    model.eval()
    if codes is None:
        x = torch.full((n, nt), model.mask_id, dtype=torch.long, device=dev)
    else:
        if known is None or known.shape != codes.shape:
            raise ValueError("inpainting needs codes and a same-shaped bool `known` mask")
        x = torch.where(known.flatten(1).to(dev), codes.flatten(1).to(dev), model.mask_id)
    unknown = x == model.mask_id
    total = unknown.sum(1)
    for t in range(steps):
        probs = F.softmax(model(x) / temperature, dim=-1)
        sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, generator=generator).view(x.shape).to(dev)
        sampled = torch.where(unknown, sampled, x)
        conf = torch.gather(probs, -1, sampled[..., None])[..., 0].clamp_min(1e-20).log()
        ratio = (t + 1) / steps
        if choice_temperature > 0:
            u = torch.rand(conf.shape, generator=generator).to(dev).clamp(1e-20, 1 - 1e-7)
            conf = conf + choice_temperature * (1 - ratio) * -torch.log(-torch.log(u))
        conf = torch.where(unknown, conf, torch.inf)
        still = torch.floor(total.float() * cosine_schedule(ratio)).long()
        ranks = conf.argsort(1).argsort(1)
        remask = ranks < still[:, None]
        x = torch.where(remask, model.mask_id, sampled)
        unknown = remask
    return x.view(-1, g, g)


# ---------------------------------------------------------------------------------------
# The trained sampler: the tiny MaskGIT trained ten times longer than the chapter's demo
# ---------------------------------------------------------------------------------------
#: The ``maskgit-tiny`` recipe: the chapter's model on the codes of 8,192 training exhibits (the
#: ``vq-tokenizer-tiny`` artifact), 3,000 steps of batch 32 on one thread (about five minutes).
#: At the chapter's 300 steps two decoding steps sample worse than one; trained this long the
#: Fréchet distance falls with every T from 1 to 8 (§2.8).
TINY_SAMPLER_TRAIN = MaskGITTrainConfig(steps=3000, batch_size=32)
TINY_SAMPLER_EXHIBITS = 8192


def build_maskgit_tiny(seed: int = 0, steps: int | None = None, exhibits: int = TINY_SAMPLER_EXHIBITS) -> MaskGIT:
    """Train the ``maskgit-tiny`` artifact from scratch with ``seed`` on one thread (§2.8)."""
    from ..data import Museum
    from ..device import num_threads
    from .tokenizer import load_tiny_tokenizer

    with num_threads(1):
        tokenizer = load_tiny_tokenizer()
        with torch.no_grad():
            codes = tokenizer.encode(Museum("train", tokenizer.config.image_size, length=exhibits).tensors(0, exhibits))
        torch.manual_seed(seed)
        model = MaskGIT(MaskGITConfig(codebook_size=tokenizer.codebook_size, grid=tokenizer.grid))
        train_maskgit(model, codes, TINY_SAMPLER_TRAIN.replace(seed=seed, **({"steps": steps} if steps else {})),
                      progress=False)
    return model.eval()


def load_maskgit_tiny(rebuild: bool = False) -> MaskGIT:
    """The ``maskgit-tiny`` artifact: committed copy, else cache, else rebuilt (Chapter 2 §2.8)."""
    from ..hub import load_artifact

    return load_artifact("maskgit-tiny", MaskGIT, rebuild=rebuild).eval()


TINY_SAMPLER_ARTIFACT = register_artifact(ArtifactSpec(
    "maskgit-tiny", "1", "vlmbook.vq.maskgit:build_maskgit_tiny", seed=0,
    description="MaskGIT over vq-tokenizer-tiny's 8x8 codes, K=512, 3000 steps on 8192 exhibits (Chapter 2)"))
