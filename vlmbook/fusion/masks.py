"""Attention masks as pictures and as the 4-D tensors Hugging Face models accept (Chapter 5 §5.4).

Convention: a boolean mask ``allowed[q, k]`` is True where query position ``q`` may attend to key
position ``k``. :func:`to_4d` turns it into the additive ``(B, 1, T, S)`` float mask (0 where
allowed, the dtype's most negative number elsewhere) that ``LlamaForCausalLM`` takes as-is with
both the ``eager`` and ``sdpa`` attention implementations.
"""
from __future__ import annotations

from typing import Sequence

import torch

Span = tuple[int, int]


def causal_mask(length: int) -> torch.Tensor:
    """(T, T) bool lower-triangular mask: each token sees itself and the past. §5.4."""
    _check_len(length)
    return torch.ones(length, length, dtype=torch.bool).tril()


def block_mask(length: int, blocks: Sequence[Span]) -> torch.Tensor:
    """(T, T) bool: causal, plus full (bidirectional) attention inside each ``[start, end)`` block. §5.4.

    With one image block this is the prefix-LM mask; with several it is the interleaved
    multi-image mask (each image is bidirectional inside itself, causal across images and text).
    """
    m = causal_mask(length)
    last = 0
    for start, end in sorted(blocks):
        if not (0 <= start < end <= length):
            raise ValueError(f"block [{start}, {end}) must satisfy 0 <= start < end <= {length}")
        if start < last:
            raise ValueError(f"blocks overlap at [{start}, {end})")
        m[start:end, start:end] = True
        last = end
    return m


def prefix_lm_mask(length: int, image_start: int, image_end: int) -> torch.Tensor:
    """(T, T) bool prefix-LM mask: the image block ``[image_start, image_end)`` is bidirectional. §5.4."""
    return block_mask(length, [(image_start, image_end)])


def image_spans(input_ids: torch.Tensor | Sequence[int], image_ids: Sequence[int] | torch.Tensor) -> list[Span]:
    """Maximal runs ``[start, end)`` of image tokens in a 1-D id sequence. §5.4."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 1:
        raise ValueError(f"image_spans needs a 1-D id sequence, got shape {tuple(ids.shape)}")
    is_img = torch.isin(ids, torch.as_tensor(image_ids, dtype=ids.dtype))
    spans, start = [], None
    for i, flag in enumerate(is_img.tolist()):
        if flag and start is None:
            start = i
        if not flag and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(ids)))
    return spans


def media_mask(text_length: int, image_positions: Sequence[int], tokens_per_image: int) -> torch.Tensor:
    """(T, n_images * M) bool Flamingo media mask. §5.4.

    Text token ``t`` attends to the tokens of the most recent image whose marker sits at a
    position ``<= t``; tokens before the first image see no image at all (their row is False and
    the gated layer adds nothing for them).
    """
    _check_len(text_length)
    if tokens_per_image < 1:
        raise ValueError(f"tokens_per_image must be >= 1, got {tokens_per_image}")
    pos = list(image_positions)
    if any(b <= a for a, b in zip(pos, pos[1:])) or any(not 0 <= p < text_length for p in pos):
        raise ValueError(f"image positions must increase and lie in [0, {text_length}), got {pos}")
    m = torch.zeros(text_length, len(pos) * tokens_per_image, dtype=torch.bool)
    for j, p in enumerate(pos):
        end = pos[j + 1] if j + 1 < len(pos) else text_length
        m[p:end, j * tokens_per_image:(j + 1) * tokens_per_image] = True
    return m


def to_4d(allowed: torch.Tensor, dtype: torch.dtype = torch.float32, batch: int | None = None) -> torch.Tensor:
    """(T, S) or (B, T, S) bool -> (B, 1, T, S) additive float mask for Hugging Face attention. §5.4."""
    if allowed.dtype != torch.bool:
        raise ValueError(f"to_4d needs a bool mask, got {allowed.dtype}")
    if allowed.ndim == 2:
        allowed = allowed[None]
    if allowed.ndim != 3:
        raise ValueError(f"to_4d needs a (T, S) or (B, T, S) mask, got shape {tuple(allowed.shape)}")
    if not dtype.is_floating_point:
        raise ValueError(f"to_4d needs a floating dtype, got {dtype}")
    out = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
    if batch is not None and out.shape[0] == 1:
        out = out.expand(batch, -1, -1, -1)
    return out


def _check_len(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
