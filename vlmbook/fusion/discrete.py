"""The discrete route: image codes become ``<v_k>`` words of the language model (Chapter 5 §5.2).

Any image tokenizer fits: it only has to turn images into integer codes ``(B, h, w)`` from a
codebook of size ``K``. Chapter 2's VQ tokenizer plugs in here (``VLMConfig.image_side="vq"``:
the ``vq-tokenizer-cell`` artifact, 48 px → one code per museum cell); so does a small, fixed
alternative: k-means over colour statistics of patches (:class:`PatchQuantizer`).
:func:`code_readout` measures how much of each cell's object a code alone names.
"""
from __future__ import annotations

from typing import Sequence

import jinja2
import torch
import torch.nn.functional as F
from torch import nn

from .text import ASSISTANT, BOS, END, IMAGE, IMAGE_END, USER


class PatchQuantizer(nn.Module):
    """A fixed k-means image tokenizer: (B, 3, H, W) in [0, 1] -> codes (B, grid, grid). §5.2.

    Each patch is described by the mean colour of its ``sub × sub`` sub-blocks (3·sub² numbers);
    the code is the nearest of ``codebook_size`` centroids learned by :meth:`fit`.
    """

    def __init__(self, codebook_size: int = 256, grid: int = 4, sub: int = 4):
        super().__init__()
        for name, v in (("codebook_size", codebook_size), ("grid", grid), ("sub", sub)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PatchQuantizer.{name} must be an int >= 1, got {v!r}")
        self.codebook_size, self.grid, self.sub = codebook_size, grid, sub
        self.register_buffer("centroids", torch.zeros(codebook_size, 3 * sub * sub))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, grid², 3·sub²) patch colour statistics."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        g, s = self.grid, self.sub
        if images.shape[-1] % (g * s) or images.shape[-2] % (g * s):
            raise ValueError(f"image side {tuple(images.shape[-2:])} must be divisible by grid*sub = {g * s}")
        x = F.adaptive_avg_pool2d(images.float(), g * s)  # (B, 3, g*s, g*s)
        B = x.shape[0]
        x = x.view(B, 3, g, s, g, s).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, 3 * s * s)
        return x

    @torch.no_grad()
    def fit(self, images: torch.Tensor, iters: int = 25, seed: int = 0) -> "PatchQuantizer":
        """Learn the centroids by k-means (k-means++ seeding) on the patches of ``images``."""
        x = self.features(images).reshape(-1, self.centroids.shape[1])
        K = self.codebook_size
        if x.shape[0] < K:
            raise ValueError(f"need at least {K} patches to fit {K} centroids, got {x.shape[0]}")
        gen = torch.Generator().manual_seed(seed)
        c = x[torch.randint(len(x), (1,), generator=gen)]
        d2 = torch.cdist(x, c).squeeze(1) ** 2
        cents = [c[0]]
        for _ in range(1, K):
            i = torch.multinomial(d2 + 1e-12, 1, generator=gen)
            cents.append(x[i[0]])
            d2 = torch.minimum(d2, ((x - x[i[0]]) ** 2).sum(1))
        c = torch.stack(cents)
        for _ in range(iters):
            assign = torch.cdist(x, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, assign, x)
            counts = torch.bincount(assign, minlength=K).clamp_min(1).unsqueeze(1).float()
            empty = torch.bincount(assign, minlength=K) == 0
            c = torch.where(empty[:, None], c, sums / counts)
        self.centroids.copy_(c)
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, grid, grid) int64 codes in [0, codebook_size)."""
        if not bool(self.fitted):
            raise ValueError("PatchQuantizer is not fitted: call fit(images) first")
        f = self.features(images)
        B = f.shape[0]
        codes = torch.cdist(f.reshape(B * self.grid**2, -1), self.centroids).argmin(1)
        return codes.view(B, self.grid, self.grid)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, grid, grid) codes -> (B, 3, grid*sub, grid*sub) centroid mosaic (what the LM 'sees')."""
        codes = check_codes(codes, self.codebook_size)
        B, g, s = codes.shape[0], self.grid, self.sub
        x = self.centroids[codes.reshape(B, -1)].view(B, g, g, 3, s, s)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(B, 3, g * s, g * s).clamp(0, 1)


def check_codes(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Validate integer codes (B, h, w) against a codebook of size K; returns them as int64."""
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError("codes must be an integer tensor")
    if codes.ndim != 3:
        raise ValueError(f"codes must be (B, h, w), got shape {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        bad = codes[(codes < 0) | (codes >= codebook_size)].unique()[:5].tolist()
        raise ValueError(f"unknown code id(s) {bad}: codes must lie in [0, {codebook_size})")
    return codes.long()


def codes_to_token_ids(codes: torch.Tensor, first_id: int, codebook_size: int, max_tokens: int | None = None) -> torch.Tensor:
    """(B, h, w) codes -> (B, h*w) vocabulary ids ``first_id + code`` (row-major). §5.2.

    Raises ``ValueError`` for codes outside ``[0, K)`` and for sequences longer than ``max_tokens``.
    """
    codes = check_codes(codes, codebook_size)
    n = codes.shape[1] * codes.shape[2]
    if max_tokens is not None and n > max_tokens:
        raise ValueError(f"{n} image tokens exceed the limit of {max_tokens}")
    return codes.reshape(codes.shape[0], n) + first_id


def token_ids_to_codes(ids: torch.Tensor, first_id: int, codebook_size: int) -> torch.Tensor:
    """Inverse of :func:`codes_to_token_ids` on a (B, N) id tensor; non-visual ids raise."""
    codes = ids.long() - first_id
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"ids outside the visual range [{first_id}, {first_id + codebook_size})")
    return codes


#: The chat template (Jinja2): several images, each followed by ``</image>``, then several
#: question/answer turns. ``images`` holds each image's token string (``<v_k>``… or ``<image>``…).
PROMPT_TEMPLATE = (
    "{{ bos }}{% for image in images %}{{ user }}{{ image }}{{ image_end }}{% endfor %}"
    "{% for turn in turns %}{% if not loop.first %}{{ user }}{% endif %}{{ turn.question }}{{ assistant }}"
    "{% if turn.answer is not none %} {{ turn.answer }}{{ end }}{% endif %}{% endfor %}"
)


def render_prompt(images: Sequence[str], questions: Sequence[str], answers: Sequence[str | None] | None = None,
                  template: str = PROMPT_TEMPLATE) -> str:
    """Fill the Jinja2 chat template with image-token strings and question(/answer) turns. §5.2.

    Pass one answer per question (``None`` leaves that turn open for generation).
    """
    if not questions:
        raise ValueError("render_prompt needs at least one question")
    answers = list(answers) if answers is not None else [None] * len(questions)
    if len(answers) != len(questions):
        raise ValueError(f"got {len(questions)} questions but {len(answers)} answers")
    if any(a is None for a in answers[:-1]):
        raise ValueError("only the last turn may be left unanswered")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    turns = [{"question": q, "answer": a} for q, a in zip(questions, answers)]
    return env.from_string(template).render(bos=BOS, user=USER, assistant=ASSISTANT, end=END, image_end=IMAGE_END,
                                            images=list(images), turns=turns)


def image_string(codes: torch.Tensor | None = None, n_placeholders: int | None = None) -> str:
    """One image's token string: ``'<v_3><v_17>…'`` from (h, w) codes, or ``'<image>' * n``."""
    if (codes is None) == (n_placeholders is None):
        raise ValueError("give exactly one of codes or n_placeholders")
    if codes is not None:
        if codes.ndim != 2:
            raise ValueError(f"codes must be (h, w) for one image, got shape {tuple(codes.shape)}")
        return "".join(f"<v_{int(k)}>" for k in codes.flatten())
    if n_placeholders < 1:
        raise ValueError(f"n_placeholders must be >= 1, got {n_placeholders}")
    return IMAGE * n_placeholders


ATTRIBUTES = ("colour", "shape", "size")


def code_readout(train_codes: torch.Tensor, train_labels: torch.Tensor, test_codes: torch.Tensor,
                 test_labels: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """How much of each cell's (colour, shape, size) its code alone tells: held-out accuracy of the
    best code → attribute lookup table, learned on training cells. §5.2.

    ``*_codes`` (n, h, w) or (n, M) codes, one per exhibit cell; ``*_labels`` (n, M, 3) from
    :func:`vlmbook.fusion.data.patch_labels` (0 = empty cell). This is what a discrete-route LM
    can learn at best from one ``<v_k>`` embedding per code. Returns, per attribute, the accuracy
    on all cells and on occupied cells (``*_object``), beside the majority-class baseline.
    """
    def flat(codes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = check_codes(codes.reshape(codes.shape[0], -1, 1), codebook_size).reshape(-1)
        if labels.ndim != 3 or labels.shape[-1] != 3 or labels.shape[0] * labels.shape[1] != codes.numel():
            raise ValueError(f"labels must be (n, M, 3) with n·M = {codes.numel()} cells, got {tuple(labels.shape)}")
        return codes, labels.reshape(-1, 3).long()

    c_tr, y_tr = flat(train_codes, train_labels)
    c_te, y_te = flat(test_codes, test_labels)
    occupied = y_te[:, 0] > 0
    out: dict[str, float] = {}
    for j, name in enumerate(ATTRIBUTES):
        n_cls = int(max(y_tr[:, j].max(), y_te[:, j].max())) + 1
        table = torch.zeros(codebook_size, n_cls).index_put_((c_tr, y_tr[:, j]), torch.ones(len(c_tr)), accumulate=True)
        # codes never seen in training fall back to the most common label overall
        fallback = int(table.sum(0).argmax())
        lookup = torch.where(table.sum(1) > 0, table.argmax(1), torch.full((codebook_size,), fallback))
        hit = lookup[c_te] == y_te[:, j]
        out[name] = round(float(hit.float().mean()), 4)
        out[f"{name}_object"] = round(float(hit[occupied].float().mean()), 4)
        out[f"{name}_baseline"] = round(float((y_te[:, j] == fallback).float().mean()), 4)
        obj = y_tr[y_tr[:, 0] > 0, j]
        out[f"{name}_object_baseline"] = round(float((y_te[occupied, j] == obj.mode().values).float().mean()), 4)
    return out


@torch.no_grad()
def tokenizer_cell_readout(tokenizer: nn.Module, train_scenes: int = 2000, test_scenes: int = 500) -> dict[str, float]:
    """:func:`code_readout` of an image tokenizer whose code grid is the museum's cells, on
    ``train_scenes`` training and ``test_scenes`` test exhibits at the tokenizer's image size. §5.2."""
    from ..data import Museum
    from .data import patch_labels

    size, g = tokenizer.config.image_size, tokenizer.grid
    codes = {s: torch.cat([tokenizer.encode(Museum(s, size, length=n).tensors(i, min(500, n - i)))
                           for i in range(0, n, 500)]) for s, n in (("train", train_scenes), ("test", test_scenes))}
    return code_readout(codes["train"], patch_labels("train", train_scenes, g), codes["test"],
                        patch_labels("test", test_scenes, g), tokenizer.codebook_size)
