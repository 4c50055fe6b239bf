"""Post-training int8 weight quantisation of linear layers, per output channel, symmetric (Chapter 6 §6.5).

``w ≈ s · q`` with ``q ∈ {−127 … 127}`` (int8) and one float scale ``s = max|w_row| / 127`` per
output row: a row's outliers only cost that row precision. Activations stay in floating point
(weight-only quantisation, as in LLM.int8()'s int8 storage without its outlier decomposition).
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> ``(q, scale)``: (out, in) int8 and (out,) float32, symmetric per row. §6.5."""
    if w.ndim != 2 or w.numel() == 0:
        raise ValueError(f"need a non-empty (out, in) weight, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("weight holds NaN or inf")
    w = w.detach().float()
    scale = w.abs().amax(1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays exactly zero
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(out, in) int8, (out,) scales -> (out, in) float32 weight."""
    return q.float() * scale[:, None]


class _Int8Rows(nn.Module):
    """A (rows, cols) weight stored as int8 with one float scale per row."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if q.dtype != torch.int8 or q.ndim != 2 or scale.shape != q.shape[:1]:
            raise ValueError(f"need (out, in) int8 and (out,) scales, got {q.dtype} {tuple(q.shape)}, "
                             f"{tuple(scale.shape)}")
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale)

    @property
    def weight(self) -> torch.Tensor:
        """The float weight it computes with, ``s · q`` (a fresh tensor: for shape, device and dtype)."""
        return dequantize(self.weight_int8, self.scale)


class Int8Linear(_Int8Rows):
    """A linear layer whose weight is stored as int8 + per-row scales; (…, in) -> (…, out). §6.5.

    Built from ``(q, scale)`` buffers, which it may share (a head tied to an :class:`Int8Embedding`),
    or from a float layer with :meth:`from_linear`.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__(q, scale)
        self.out_features, self.in_features = q.shape
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        """Quantise a float ``nn.Linear`` per output row."""
        q, s = quantize_per_channel(linear.weight)
        return cls(q, s, None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (x · qᵀ) · s == x · (s·q)ᵀ: the scale can be applied to the output instead of the weight
        y = F.linear(x.float(), self.weight_int8.float()) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(_Int8Rows):
    """An embedding table stored as int8 + one scale per token row; (…) ids -> (…, dim). §6.5."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__(*quantize_per_channel(embedding.weight))
        self.num_embeddings, self.embedding_dim = self.weight_int8.shape
        self.padding_idx = embedding.padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # gather the int8 rows first: only the looked-up rows are converted to float
        return F.embedding(ids, self.weight_int8).float() * self.scale[ids, None]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def quantize_embeddings(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Make a Hugging Face causal LM's input embeddings int8 in place, and its output head too when it is
    tied to them (the head then reads the same int8 table); returns ``(model, names)``. §6.5."""
    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"the input embeddings are {type(emb).__name__}, not nn.Embedding")
    head = model.get_output_embeddings()
    tied = isinstance(head, nn.Linear) and head.weight is emb.weight
    q8 = Int8Embedding(emb)
    model.set_input_embeddings(q8)
    names = ["input_embeddings"]
    if tied:
        bias = None if head.bias is None else head.bias.detach().float().clone()
        model.set_output_embeddings(Int8Linear(q8.weight_int8, q8.scale, bias))
        names.append("output_embeddings")
    return model, names


def quantize_linear_layers(model: nn.Module, skip: Iterable[str] = (), inplace: bool = False) -> tuple[nn.Module, list[str]]:
    """Replace every ``nn.Linear`` (names not in ``skip``) by :class:`Int8Linear`; returns ``(model, names)``. §6.5.

    A linear layer whose weight is shared with another module (a tied LM head) is skipped: its
    float copy is kept anyway, so quantising it would add bytes instead of saving them.
    """
    skip = set(skip)
    m = model if inplace else copy.deepcopy(model)
    counts: dict[int, int] = {}
    for _, p in m.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    names = []
    for name, mod in list(m.named_modules()):
        if isinstance(mod, nn.Linear) and name not in skip and counts.get(id(mod.weight), 0) == 1:
            parent_name, _, child = name.rpartition(".")
            parent = m.get_submodule(parent_name) if parent_name else m
            setattr(parent, child, Int8Linear.from_linear(mod))
            names.append(name)
    unknown = skip - {n for n, _ in m.named_modules()}
    if unknown:
        raise ValueError(f"skip names modules that do not exist: {sorted(unknown)}")
    if not names:
        raise ValueError("no nn.Linear layer to quantise")
    return m, names


def model_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each shared tensor counted once. §6.5."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def linear_bytes(module: nn.Module) -> int:
    """Bytes held by the weights, scales and biases of its ``nn.Linear`` and :class:`Int8Linear` layers. §6.5."""
    total = 0
    for mod in module.modules():
        if isinstance(mod, (nn.Linear, Int8Linear)):
            total += model_bytes(mod)
    return total
