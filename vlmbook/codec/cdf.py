"""Quantised CDF tables shared by both entropy coders (Chapter 3 §3.5).

A table for one distribution holds ``n`` in-range symbols plus one *escape* symbol, as integer
frequencies summing to ``2**precision`` with no zero frequency. Values outside the table's
range are coded as the escape followed by an Elias-gamma payload of bypass bits. The layout
matches CompressAI's (``cdf[0] = 0``, ``cdf[n + 1] = 2**precision``, length ``n + 2``), so the
same tables can be handed to ``compressai.ans`` in benchmarks.
"""
from __future__ import annotations

import dataclasses

import numpy as np

PRECISION = 16
#: Largest escape payload magnitude (values are clipped to +-2**30 by the models anyway).
MAX_ESCAPE_BITS = 32


class BitstreamError(ValueError):
    """A compressed stream is corrupt, truncated, or not a vlmbook stream (Chapter 3 §3.7)."""


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """(n,) probabilities -> (n + 1,) int64 CDF with every frequency >= 1. Chapter 3 §3.5.

    Each symbol first gets one count, the remaining ``2**precision - n`` counts are shared in
    proportion to ``pmf`` (floor), and the leftover counts go to the largest fractional parts
    (ties broken by index), so the result is deterministic.
    """
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"pmf must be a non-empty 1-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("pmf must be finite, non-negative and not all zero")
    total = 1 << precision
    n = p.size
    if n > total:
        raise ValueError(f"{n} symbols do not fit in {precision}-bit precision")
    share = p / p.sum() * (total - n)
    freq = 1 + np.floor(share).astype(np.int64)
    left = total - int(freq.sum())
    if left > 0:
        frac = share - np.floor(share)
        order = np.lexsort((np.arange(n), -frac))  # largest fraction first, then lowest index
        freq[order[:left]] += 1
    cdf = np.zeros(n + 1, np.int64)
    np.cumsum(freq, out=cdf[1:])
    return cdf


@dataclasses.dataclass
class CdfTables:
    """A set of quantised CDFs: ``cdf`` (T, Lmax) int32 padded with ``2**precision``,
    ``lengths`` (T,) = n + 2 per table, ``offsets`` (T,) = value of symbol 0. Chapter 3 §3.5."""

    cdf: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    precision: int = PRECISION

    def __post_init__(self) -> None:
        self.cdf = np.ascontiguousarray(self.cdf, dtype=np.int64)
        self.lengths = np.ascontiguousarray(self.lengths, dtype=np.int64).reshape(-1)
        self.offsets = np.ascontiguousarray(self.offsets, dtype=np.int64).reshape(-1)
        if self.cdf.ndim != 2 or len(self.lengths) != self.cdf.shape[0] or len(self.offsets) != self.cdf.shape[0]:
            raise ValueError("cdf must be (T, L) with T lengths and T offsets")
        if np.any(self.lengths < 3) or np.any(self.lengths > self.cdf.shape[1]):
            raise ValueError("each table needs 3 <= length <= cdf.shape[1]")
        total = 1 << self.precision
        for t, n in enumerate(self.lengths):
            row = self.cdf[t, :n]
            if row[0] != 0 or row[-1] != total or np.any(np.diff(row) <= 0):
                raise ValueError(f"table {t} is not a strictly increasing CDF from 0 to {total}")
            self.cdf[t, n:] = total
        self._lut: np.ndarray | None = None

    @classmethod
    def from_pmfs(cls, pmfs: list[np.ndarray], tails: list[float], offsets: list[int],
                  precision: int = PRECISION) -> "CdfTables":
        """One table per ``pmf`` (in-range symbols) with ``tail`` mass on the escape symbol."""
        rows = [quantize_pmf(np.append(np.asarray(p, np.float64), max(float(t), 0.0)), precision)
                for p, t in zip(pmfs, tails)]
        width = max(len(r) for r in rows)
        cdf = np.full((len(rows), width), 1 << precision, np.int64)
        for i, r in enumerate(rows):
            cdf[i, :len(r)] = r
        return cls(cdf, np.array([len(r) for r in rows]), np.asarray(offsets), precision)

    @property
    def num_tables(self) -> int:
        return self.cdf.shape[0]

    def lut(self) -> np.ndarray:
        """(T * 2**precision,) uint16 slot -> symbol lookup, built once (for the rANS decoder)."""
        if self._lut is None:
            total = 1 << self.precision
            lut = np.empty(self.num_tables * total, np.uint16)
            for t, n in enumerate(self.lengths):
                freq = np.diff(self.cdf[t, :n])
                lut[t * total:(t + 1) * total] = np.repeat(np.arange(n - 1, dtype=np.uint16), freq)
            self._lut = lut
        return self._lut

    def split(self, values: np.ndarray, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values -> (symbol, is_escape, relative value): symbol n (escape) when out of range."""
        values = np.asarray(values, np.int64).reshape(-1)
        indexes = np.asarray(indexes, np.int64).reshape(-1)
        if values.shape != indexes.shape:
            raise ValueError(f"values {values.shape} and indexes {indexes.shape} differ in shape")
        if indexes.size and (indexes.min() < 0 or indexes.max() >= self.num_tables):
            raise ValueError(f"indexes must lie in [0, {self.num_tables})")
        rel = values - self.offsets[indexes]
        nsym = self.lengths[indexes] - 2  # in-range symbols per table
        esc = (rel < 0) | (rel >= nsym)
        sym = np.where(esc, nsym, rel)
        return sym, esc, rel

    def ideal_bits(self, values: np.ndarray, indexes: np.ndarray) -> float:
        """Sum of -log2 p under the quantised tables, plus escape payload bits."""
        sym, esc, rel = self.split(values, indexes)
        idx = np.asarray(indexes, np.int64).reshape(-1)
        freq = self.cdf[idx, sym + 1] - self.cdf[idx, sym]
        bits = float(np.sum(self.precision - np.log2(freq)))
        nsym = self.lengths[idx] - 2
        for r, n in zip(rel[esc], nsym[esc]):
            bits += len(escape_bits(int(r), int(n)))
        return bits


def escape_bits(rel: int, nsym: int) -> list[int]:
    """Elias-gamma bits for an out-of-range relative value (zig-zag around the table)."""
    u = -2 * rel - 1 if rel < 0 else 2 * (rel - nsym)
    v = u + 1
    nb = v.bit_length()
    if nb > MAX_ESCAPE_BITS:
        raise ValueError(f"value {rel} is too far outside its table to code")
    return [0] * (nb - 1) + [(v >> (nb - 1 - i)) & 1 for i in range(nb)]


def read_escape(next_bit, nsym: int) -> int:
    """Inverse of :func:`escape_bits`; ``next_bit()`` returns one bit (or raises BitstreamError)."""
    zeros = 0
    while next_bit() == 0:
        zeros += 1
        if zeros >= MAX_ESCAPE_BITS:
            raise BitstreamError("escape code longer than 32 bits")
    v = 1
    for _ in range(zeros):
        v = (v << 1) | next_bit()
    u = v - 1
    return -(u + 1) // 2 if u % 2 == 1 else nsym + u // 2
