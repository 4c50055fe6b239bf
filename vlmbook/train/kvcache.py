"""KV-cache compression: keys and values kept in 8 bits while the guide generates (Chapter 6 §6.5).

During generation every layer keeps the keys and values of all earlier tokens; at long contexts
this cache, not the weights, fills memory. :class:`Int8KVLayer` stores each cached key and value
vector as int8 with one absmax scale per (batch, head, position) — appendable, so each token is
quantised once — and hands attention the dequantised vectors; the tokens of the current step are
used exactly. ``transformers``' own ``QuantizedCache("fp8", ...)`` (one scale per tensor, float8
codes) is the reference it is measured against.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import Cache, PretrainedConfig, QuantizedCache
from transformers.cache_utils import BaseQuantizedLayer

KINDS = ("fp32", "int8", "fp8")


def quantize_int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., d) float -> (int8 codes (..., d), float32 scales (..., 1)), absmax per row. §6.5."""
    scale = (x.detach().abs().amax(-1, keepdim=True).float() / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    return (x.float() / scale).round().clamp(-127, 127).to(torch.int8), scale


def dequantize_int8_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(int8 (..., d), scales (..., 1)) -> (..., d) ``dtype``. §6.5."""
    return (q.float() * scale).to(dtype)


class Int8KVLayer(BaseQuantizedLayer):
    """One layer's KV cache: (B, H, T, d) keys and values as int8 rows with a scale each. §6.5."""

    def _quantize(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantize_int8_rows(tensor)

    def _dequantize(self, q_tensor: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return dequantize_int8_rows(*q_tensor, dtype=self.keys.dtype)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (B, H, t, d) keys and values; return all keys and values (B, H, T, d)."""
        self.cumulative_length += key_states.shape[-2]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self._quantized_keys = self._quantize(key_states)
            self._quantized_values = self._quantize(value_states)
            return key_states, value_states
        keys = torch.cat([self._dequantize(self._quantized_keys), key_states], dim=-2)
        values = torch.cat([self._dequantize(self._quantized_values), value_states], dim=-2)
        self._quantized_keys = _append(self._quantized_keys, self._quantize(key_states))
        self._quantized_values = _append(self._quantized_values, self._quantize(value_states))
        return keys, values


def _append(old: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor]):
    return torch.cat([old[0], new[0]], dim=-2), torch.cat([old[1], new[1]], dim=-2)


def int8_cache(config: PretrainedConfig | None = None) -> Cache:
    """An empty KV cache of :class:`Int8KVLayer` s (one per decoder layer, created as they are used). §6.5."""
    return Cache(layer_class_to_replicate=Int8KVLayer)


def fp8_cache(config: PretrainedConfig) -> Cache:
    """``transformers``' float8 ``QuantizedCache`` (one scale per tensor), the reference. §6.5."""
    return QuantizedCache("fp8", config)


def cache_factory(kind: str):
    """``"fp32"`` (None: the model's ``DynamicCache``), ``"int8"`` or ``"fp8"`` -> a ``config -> Cache`` factory."""
    if kind not in KINDS:
        raise ValueError(f"unknown KV-cache kind {kind!r}; known: {KINDS}")
    return {"fp32": None, "int8": int8_cache, "fp8": fp8_cache}[kind]


@contextlib.contextmanager
def kv_cache(vlm, kind: str) -> Iterator[None]:
    """Within the block, ``vlm`` (a ``VisionLanguageModel``) generates with a ``kind`` KV cache. §6.5."""
    factory = cache_factory(kind)
    before = vlm.text.cache_factory
    vlm.text.cache_factory = factory
    try:
        yield
    finally:
        vlm.text.cache_factory = before


def cache_bytes(cache: Cache) -> dict[str, int]:
    """Bytes a filled cache holds (codes and scales) and what the same keys and values take in fp32. §6.5."""
    stored = fp32 = 0
    for layer in cache.layers:
        if isinstance(layer, BaseQuantizedLayer) and layer._quantized_keys is not None:
            for q in (layer._quantized_keys, layer._quantized_values):
                stored += sum(t.numel() * t.element_size() for t in q)
                fp32 += q[0].numel() * 4
        elif getattr(layer, "keys", None) is not None and layer.keys.numel():
            for t in (layer.keys, layer.values):
                stored += t.numel() * t.element_size()
                fp32 += t.numel() * 4
    return {"stored_bytes": stored, "fp32_bytes": fp32}
