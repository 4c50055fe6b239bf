"""A readable range (arithmetic) coder written from scratch (Chapter 3 §3.5).

Integer arithmetic only: the coder keeps an interval ``[low, high]`` of 32-bit integers. Coding
a symbol with cumulative count ``start`` and count ``freq`` (out of ``2**precision``) narrows
the interval to that symbol's share. Whenever the interval's top bit is settled it is sent out
and the interval doubles (renormalisation); when the interval straddles the middle but has
shrunk to the middle half, the decision is postponed ("pending" bits, the E3 case of Witten,
Neal & Cleary 1987). Slow (pure Python, one loop turn per bit) but every step is visible;
:mod:`vlmbook.codec.rans` is the fast path with the same tables.
"""
from __future__ import annotations

import bisect

import numpy as np

from .cdf import BitstreamError, CdfTables, escape_bits, read_escape

BITS = 32
TOP = (1 << BITS) - 1
HALF = 1 << (BITS - 1)
QUARTER = 1 << (BITS - 2)
#: Bits the decoder reads beyond the encoder's last bit: it starts 32 bits ahead, and the flush
#: writes 2 bits that it never shifts in.
LOOKAHEAD = BITS - 2
#: The uniform binary table used for escape payload (bypass) bits.
_BIT_CDF = (0, 1 << 15, 1 << 16)


class RangeEncoder:
    """Encode (start, freq) intervals into a list of bits. Chapter 3 §3.5."""

    def __init__(self, precision: int = 16) -> None:
        self.precision = precision
        self.low, self.high, self.pending = 0, TOP, 0
        self.bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)  # postponed opposite bits
        self.pending = 0

    def encode(self, start: int, freq: int) -> None:
        """Narrow the interval to ``[start, start + freq)`` of ``2**precision`` and renormalise."""
        span = self.high - self.low + 1
        self.high = self.low + ((span * (start + freq)) >> self.precision) - 1
        self.low = self.low + ((span * start) >> self.precision)
        while True:
            if self.high < HALF:  # both in the lower half: the next bit is 0
                self._emit(0)
            elif self.low >= HALF:  # both in the upper half: the next bit is 1
                self._emit(1)
                self.low -= HALF
                self.high -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:  # middle half: postpone
                self.pending += 1
                self.low -= QUARTER
                self.high -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1

    def finish(self) -> bytes:
        """Flush two bits that pin the final interval and pack to bytes (zero padded)."""
        self.pending += 1
        self._emit(0 if self.low < QUARTER else 1)
        return np.packbits(np.array(self.bits, np.uint8)).tobytes()


class RangeDecoder:
    """Mirror of :class:`RangeEncoder`: reads bits past the end as zeros. Chapter 3 §3.5."""

    def __init__(self, data: bytes, precision: int = 16) -> None:
        self.precision = precision
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8)).tolist()
        self.pos = 0
        self.low, self.high, self.value = 0, TOP, 0
        for _ in range(BITS):
            self.value = (self.value << 1) | self._next()

    def _next(self) -> int:
        b = self.bits[self.pos] if self.pos < len(self.bits) else 0
        self.pos += 1
        if self.pos > len(self.bits) + 2 * BITS:
            raise BitstreamError("range-coded stream ended early")
        return b

    def decode(self, cdf) -> int:
        """Find the symbol whose interval holds the current value, then narrow as the encoder did."""
        span = self.high - self.low + 1
        target = (((self.value - self.low + 1) << self.precision) - 1) // span
        if not 0 <= target < cdf[-1]:
            raise BitstreamError("range decoder left its interval (corrupt stream)")
        s = bisect.bisect_right(cdf, target) - 1
        start, freq = cdf[s], cdf[s + 1] - cdf[s]
        self.high = self.low + ((span * (start + freq)) >> self.precision) - 1
        self.low = self.low + ((span * start) >> self.precision)
        while True:
            if self.high < HALF:
                pass
            elif self.low >= HALF:
                self.low -= HALF
                self.high -= HALF
                self.value -= HALF
            elif self.low >= QUARTER and self.high < HALF + QUARTER:
                self.low -= QUARTER
                self.high -= QUARTER
                self.value -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
            self.value = 2 * self.value + self._next()
        return s


def encode(values: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    """Integer values (N,), table index per value (N,) -> bytes, escapes coded inline. Chapter 3 §3.5."""
    sym, esc, rel = tables.split(values, indexes)
    idx = np.asarray(indexes, np.int64).reshape(-1)
    enc = RangeEncoder(tables.precision)
    rows = {}
    for s, e, r, t in zip(sym.tolist(), esc.tolist(), rel.tolist(), idx.tolist()):
        cdf = rows.get(t)
        if cdf is None:
            cdf = rows[t] = tables.cdf[t, :tables.lengths[t]].tolist()
        enc.encode(cdf[s], cdf[s + 1] - cdf[s])
        if e:
            for b in escape_bits(r, len(cdf) - 2):
                enc.encode(_BIT_CDF[b], 1 << 15)
    return enc.finish()


def decode(data: bytes, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Inverse of :func:`encode`: (N,) int64 values; corrupt input raises BitstreamError."""
    idx = np.asarray(indexes, np.int64).reshape(-1)
    dec = RangeDecoder(data, tables.precision)
    out = np.empty(idx.size, np.int64)
    rows = {}
    for i, t in enumerate(idx.tolist()):
        cdf = rows.get(t)
        if cdf is None:
            cdf = rows[t] = tables.cdf[t, :tables.lengths[t]].tolist()
        s = dec.decode(cdf)
        n = len(cdf) - 2
        if s == n:
            s = read_escape(lambda: dec.decode(_BIT_CDF), n)
        out[i] = s + tables.offsets[t]
    check_end(np.frombuffer(data, np.uint8), dec.pos)
    return out


def check_end(buf: np.ndarray, pos: int) -> None:
    """The decoder read ``pos`` bits, so the encoder wrote ``pos - LOOKAHEAD`` bits, zero-padded
    to a byte: any other length or padding is a corrupt stream (BitstreamError)."""
    written = pos - LOOKAHEAD
    if (written + 7) // 8 != buf.size:
        raise BitstreamError(f"range-coded stream is {buf.size} bytes, its symbols end after {written} bits")
    if written % 8 and int(buf[-1]) & ((1 << (8 - written % 8)) - 1):
        raise BitstreamError("non-zero padding after the range-coded stream")
