"""Storing image tokens: JSONL, a uint16 binary file with a header, and Parquet (Chapter 3 §3.10).

Each record is an id (str) and a 2-D grid of integer tokens in [0, 65535] (a tokenizer's
codes, or a codec's symbols shifted to be non-negative).
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .cdf import BitstreamError

TOKEN_MAGIC = b"VLMT"
TOKEN_VERSION = 1
#: Caps on a token file's declared contents, checked before allocating.
MAX_RECORDS = 1 << 24
MAX_TOKENS_PER_RECORD = 1 << 24


def _check(ids: Sequence[str], grids: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(ids) != len(grids):
        raise ValueError(f"{len(ids)} ids for {len(grids)} token grids")
    out = []
    for i, g in zip(ids, grids):
        if not isinstance(i, str):
            raise ValueError(f"ids must be strings, got {type(i).__name__}")
        a = np.asarray(g)
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"token grid {i!r} must be a 2-D integer array, got {a.dtype} {a.shape}")
        if a.size and (a.min() < 0 or a.max() > 0xFFFF):
            raise ValueError(f"token grid {i!r} has values outside [0, 65535]")
        out.append(a.astype(np.uint16))
    return out


def save_jsonl(path: str | Path, ids: Sequence[str], grids: Sequence[np.ndarray]) -> None:
    """One JSON object per line: {"id", "shape", "tokens"} (readable, ~3-6 bytes per token)."""
    grids = _check(ids, grids)
    with open(path, "w") as f:
        for i, g in zip(ids, grids):
            f.write(json.dumps({"id": i, "shape": list(g.shape), "tokens": g.reshape(-1).tolist()}) + "\n")


def load_jsonl(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """Inverse of :func:`save_jsonl`."""
    ids, grids = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                g = np.asarray(rec["tokens"], np.int64).reshape(rec["shape"])
            except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
                raise ValueError(f"{path}:{n}: bad token record ({e})") from None
            ids.append(str(rec["id"]))
            grids.append(_check([ids[-1]], [g])[0])
    return ids, grids


def save_binary(path: str | Path, ids: Sequence[str], grids: Sequence[np.ndarray]) -> None:
    """Header (magic, version, count), per record (id length, id, rows, cols), uint16 tokens,
    then a CRC32: 2 bytes per token plus a few bytes per record."""
    grids = _check(ids, grids)
    parts = [struct.pack("<4sBI", TOKEN_MAGIC, TOKEN_VERSION, len(grids))]
    for i, g in zip(ids, grids):
        b = i.encode("utf-8")
        parts.append(struct.pack("<H", len(b)) + b + struct.pack("<II", *g.shape))
        parts.append(g.astype("<u2").tobytes())
    body = b"".join(parts)
    Path(path).write_bytes(body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF))


def load_binary(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """Inverse of :func:`save_binary`; corrupt files raise BitstreamError."""
    data = Path(path).read_bytes()
    if len(data) < 13:
        raise BitstreamError("token file too short")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise BitstreamError("token file CRC32 mismatch")
    magic, version, count = struct.unpack_from("<4sBI", body, 0)
    if magic != TOKEN_MAGIC or version != TOKEN_VERSION or count > MAX_RECORDS:
        raise BitstreamError("not a vlmbook token file (magic, version or count)")
    off, ids, grids = 9, [], []
    try:
        for _ in range(count):
            (n,) = struct.unpack_from("<H", body, off)
            ids.append(body[off + 2:off + 2 + n].decode("utf-8"))
            off += 2 + n
            rows, cols = struct.unpack_from("<II", body, off)
            off += 8
            if rows * cols > MAX_TOKENS_PER_RECORD or off + 2 * rows * cols > len(body):
                raise BitstreamError("token record larger than the file or the cap")
            grids.append(np.frombuffer(body, "<u2", rows * cols, off).reshape(rows, cols).astype(np.uint16))
            off += 2 * rows * cols
    except (struct.error, UnicodeDecodeError) as e:
        raise BitstreamError(f"truncated token file: {e}") from None
    if off != len(body):
        raise BitstreamError("trailing bytes in token file")
    return ids, grids


def save_parquet(path: str | Path, ids: Sequence[str], grids: Sequence[np.ndarray]) -> None:
    """A Parquet table (id: string, rows/cols: int32, tokens: list<uint16>), zstd compressed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    grids = _check(ids, grids)
    table = pa.table({
        "id": pa.array(list(ids), pa.string()),
        "rows": pa.array([g.shape[0] for g in grids], pa.int32()),
        "cols": pa.array([g.shape[1] for g in grids], pa.int32()),
        "tokens": pa.array([g.reshape(-1) for g in grids], pa.list_(pa.uint16())),
    })
    pq.write_table(table, str(path), compression="zstd")


def load_parquet(path: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """Inverse of :func:`save_parquet`."""
    import pyarrow.parquet as pq

    t = pq.read_table(str(path)).to_pydict()
    grids = [np.asarray(tok, np.uint16).reshape(r, c) for tok, r, c in zip(t["tokens"], t["rows"], t["cols"])]
    return [str(i) for i in t["id"]], grids
