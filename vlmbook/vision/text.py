"""A word-level tokenizer over the museum's closed vocabulary, and the CLIP text encoder. Chapter 4 §4.1.

The museum's captions and questions use about 150 distinct words, so a fixed word list is a
complete tokenizer here (Chapter 5 trains a BPE tokenizer for the language model).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from ..data.museum import COLOUR_NAMES, LOCATIONS, SHAPES, SIZE_NAMES
from ..resample.layers import Block
from ..resample.positions import sincos_1d

SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<cls>")
_TEMPLATE_TEXT = (
    "an exhibit with objects : this shows on the wall hang a plaque reads at . , ? "
    "zero one two three four five six what colour is shape object how many are there in "
    "where to left right of above below which larger or number top bottom centre middle"
)
_WORD = re.compile(r"[a-z]+|\d+|[^\sa-z\d]")


def museum_vocabulary() -> list[str]:
    """The fixed word list: specials, then template words, names, plurals and the numbers 0-99."""
    words = list(_TEMPLATE_TEXT.split()) + list(COLOUR_NAMES) + list(SHAPES) + list(SIZE_NAMES)
    words += [s + ("es" if s.endswith("s") else "s") for s in SHAPES]
    words += [w for loc in LOCATIONS for w in loc.split()] + [str(k) for k in range(100)]
    out: list[str] = list(SPECIALS)
    for w in words:
        if w not in out:
            out.append(w)
    return out


class MuseumTokenizer:
    """Lower-cases, splits words/numbers/punctuation, maps them to ids; ``<cls>`` is prepended."""

    def __init__(self) -> None:
        self.vocab = museum_vocabulary()
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.cls_id = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        """'A red star.' -> ['a', 'red', 'star', '.']."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        return _WORD.findall(text.lower())

    def encode(self, texts: Sequence[str] | str, max_len: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> ids (B, L) int64 and mask (B, L) bool, L = longest text + 1 (<= max_len)."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("encode needs at least one text")
        rows = [[self.cls_id] + [self.index.get(w, self.unk_id) for w in self.words(t)] for t in texts]
        longest = max(len(r) for r in rows)
        if longest > max_len:
            raise ValueError(f"a text has {longest - 1} words; at most {max_len - 1} fit (max_len={max_len})")
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
        return ids, ids != self.pad_id

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """ids (L,) -> text without specials."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return " ".join(self.vocab[i] for i in ids if self.vocab[i] not in SPECIALS)


class TextEncoder(nn.Module):
    """Word embeddings + 1-D sin-cos positions + transformer; (B, L) ids -> (B, L, D) and pooled (B, D)."""

    def __init__(self, vocab_size: int, dim: int, depth: int, heads: int, max_len: int, mlp_ratio: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.register_buffer("pos", sincos_1d(max_len, dim), persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, L), mask (B, L) -> tokens (B, L, D), masked mean (B, D)."""
        if ids.dim() != 2 or ids.shape != mask.shape:
            raise ValueError(f"ids and mask must both be (B, L), got {tuple(ids.shape)} and {tuple(mask.shape)}")
        if ids.shape[1] > self.pos.shape[0]:
            raise ValueError(f"text of length {ids.shape[1]} exceeds max_len={self.pos.shape[0]}")
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x, key_mask=mask)
        x = self.norm(x)
        w = mask.to(x.dtype)[..., None]
        return x, (x * w).sum(1) / w.sum(1).clamp_min(1.0)
