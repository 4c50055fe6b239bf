"""The ``.vlmb`` file format and image-level compress / decompress (Chapter 3 §3.7).

Layout (little endian)::

    offset  size  field
    0       4     magic b"VLMB"
    4       1     format version (2: streams range coded, Chapter 3 §3.6; 1 was rANS)
    5       1     model id (1 = tiny scale hyperprior)
    6       1     quality (1..4, selects the artifact codec-q<quality>)
    7       1     image mode (1 = L, 2 = LA, 3 = RGB, 4 = RGBA)
    8       4     height
    12      4     width
    16      1     number of streams S (2, or 3 with alpha)
    17      4*S   stream lengths
    17+4S   4     CRC32 of every byte before it and of the payload
    21+4S   ...   payload: y stream, z stream [, alpha stream]

Colour is coded by the learned codec. A grey image is coded as three equal channels and
turned back to grey (mean of the channels) on decode. Alpha is *not* thrown away: it is
stored losslessly (zlib) as the third stream. Any other Pillow mode is converted explicitly
(palette and CMYK to RGB or RGBA, 16-bit and float images to 8 bits).

The decoder trusts nothing: it checks magic, version, ids, the size cap (``MAX_SIDE``,
``MAX_PIXELS``) before allocating anything, that the stream lengths add up to the file, and
the CRC; anything wrong raises :class:`BitstreamError`.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .cdf import BitstreamError

MAGIC = b"VLMB"
VERSION = 2
MODEL_IDS = {1: "tiny scale hyperprior"}
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
#: Caps checked before any allocation: a side of at most 16,384 px and 2**22 (4.2 M) pixels, which
#: keeps the tiny model's decoder under about 1 GB of activations (it decodes in one piece).
MAX_SIDE = 1 << 14
MAX_PIXELS = 1 << 22
_HEAD = struct.Struct("<4sBBBBIIB")


def _default_model(quality: int):
    from ..hub import load_artifact
    from .models import HyperpriorCodec

    model = load_artifact(f"codec-q{quality}", HyperpriorCodec)
    model.eval()
    return model


def image_to_array(img) -> tuple[np.ndarray, str]:
    """A Pillow image or uint8 array -> ((H, W, C) uint8, mode in L/LA/RGB/RGBA)."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        a = img
        if a.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8, got {a.dtype}")
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
            raise ValueError(f"image array must be (H, W) or (H, W, 1|2|3|4), got {img.shape}")
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
        return np.ascontiguousarray(a), mode
    if not isinstance(img, Image.Image):
        raise ValueError(f"expected a PIL image or uint8 array, got {type(img).__name__}")
    if img.mode in ("L", "LA", "RGB", "RGBA"):
        conv = img
    elif img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        from ..data.folder import to_uint8

        return to_uint8(img)[..., None], "L"
    elif img.mode == "1":
        conv = img.convert("L")
    else:  # P, PA, CMYK, YCbCr, LAB, HSV, RGBX ...: keep alpha if there is any
        has_alpha = "A" in img.getbands() or "transparency" in img.info
        conv = img.convert("RGBA" if has_alpha else "RGB")
    a = np.asarray(conv, np.uint8)
    return np.ascontiguousarray(a if a.ndim == 3 else a[..., None]), conv.mode


def encode_image(img, quality: int = 3, model=None) -> bytes:
    """Image (PIL or uint8 array, any size and mode) -> ``.vlmb`` bytes."""
    from .metrics import to_tensor
    from .models import pad_to

    if not isinstance(quality, int) or not 1 <= quality <= 4:
        raise ValueError(f"quality must be an int in [1, 4], got {quality!r}")
    a, mode = image_to_array(img)
    h, w = a.shape[:2]
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise ValueError(f"image of {w}x{h} exceeds the format's caps ({MAX_SIDE} px a side, {MAX_PIXELS} px)")
    colour = a[..., :3] if mode in ("RGB", "RGBA") else np.repeat(a[..., :1], 3, axis=2)
    model = model or _default_model(quality)
    streams, _ = model.compress(pad_to(to_tensor(colour)))
    if mode in ("LA", "RGBA"):
        streams.append(zlib.compress(np.ascontiguousarray(a[..., -1]).tobytes(), 9))
    mode_id = {v: k for k, v in MODES.items()}[mode]
    head = _HEAD.pack(MAGIC, VERSION, 1, quality, mode_id, h, w, len(streams))
    head += struct.pack(f"<{len(streams)}I", *[len(s) for s in streams])
    payload = b"".join(streams)
    crc = zlib.crc32(payload, zlib.crc32(head)) & 0xFFFFFFFF
    return head + struct.pack("<I", crc) + payload


def parse_header(data: bytes) -> dict:
    """Check and unpack a ``.vlmb`` header (raises BitstreamError); no pixel work."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEAD.size:
        raise BitstreamError("file too short for a .vlmb header")
    magic, version, model_id, quality, mode_id, h, w, ns = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError("not a .vlmb file (bad magic)")
    if version != VERSION:
        raise BitstreamError(f"unsupported .vlmb version {version}")
    if model_id not in MODEL_IDS:
        raise BitstreamError(f"unknown model id {model_id}")
    if not 1 <= quality <= 4:
        raise BitstreamError(f"bad quality {quality}")
    if mode_id not in MODES:
        raise BitstreamError(f"bad image mode {mode_id}")
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and h * w <= MAX_PIXELS):
        raise BitstreamError(f"image size {w}x{h} exceeds the caps")
    expect_ns = 3 if MODES[mode_id] in ("LA", "RGBA") else 2
    if ns != expect_ns:
        raise BitstreamError(f"{ns} streams for mode {MODES[mode_id]} (expected {expect_ns})")
    off = _HEAD.size
    if len(data) < off + 4 * ns + 4:
        raise BitstreamError("file too short for its stream table")
    lengths = struct.unpack_from(f"<{ns}I", data, off)
    off += 4 * ns
    (crc,) = struct.unpack_from("<I", data, off)
    payload = data[off + 4:]
    if sum(lengths) != len(payload):
        raise BitstreamError(f"stream lengths add up to {sum(lengths)} bytes but the payload has {len(payload)}")
    if zlib.crc32(payload, zlib.crc32(data[:off])) & 0xFFFFFFFF != crc:
        raise BitstreamError("CRC32 mismatch: the file is corrupt")
    streams, pos = [], 0
    for n in lengths:
        streams.append(payload[pos:pos + n])
        pos += n
    return {"version": version, "model_id": model_id, "quality": quality, "mode": MODES[mode_id],
            "height": h, "width": w, "streams": streams}


def decode_image(data: bytes, model=None, model_for: Callable[[int], object] | None = None) -> np.ndarray:
    """``.vlmb`` bytes -> (H, W, C) uint8 array (C = 1, 2, 3 or 4 by the stored mode).

    Corrupt, truncated or foreign input raises :class:`BitstreamError`.
    """
    from .metrics import to_uint8
    from .models import STRIDE

    info = parse_header(data)
    h, w = info["height"], info["width"]
    model = model or (model_for or _default_model)(info["quality"])
    zs = (-(-h // STRIDE), -(-w // STRIDE))
    try:
        x_hat = model.decompress(info["streams"][:2], zs)
    except BitstreamError:
        raise
    except (ValueError, IndexError, OverflowError, RuntimeError) as e:  # belt and braces
        raise BitstreamError(f"corrupt stream: {e}") from None
    rgb = to_uint8(torch.nan_to_num(x_hat[..., :h, :w]))
    mode = info["mode"]
    if mode in ("L", "LA"):
        out = np.round(rgb.astype(np.float64).mean(axis=2, keepdims=True)).astype(np.uint8)
    else:
        out = rgb
    if mode in ("LA", "RGBA"):
        d = zlib.decompressobj()
        try:
            alpha = d.decompress(info["streams"][2], h * w)
        except zlib.error as e:
            raise BitstreamError(f"alpha stream is corrupt: {e}") from None
        if len(alpha) != h * w or d.unconsumed_tail or not d.eof:
            raise BitstreamError("alpha stream has the wrong size")
        if d.unused_data:  # one canonical file per image: nothing may follow the zlib stream
            raise BitstreamError(f"{len(d.unused_data)} bytes follow the alpha stream")
        out = np.concatenate([out, np.frombuffer(alpha, np.uint8).reshape(h, w, 1)], axis=2)
    return out


#: Output formats ``decompress_file`` writes, and the modes each can hold.
_FORMATS = {".png": ("L", "LA", "RGB", "RGBA"), ".webp": ("L", "RGB", "RGBA"), ".tif": ("L", "LA", "RGB", "RGBA"),
            ".tiff": ("L", "LA", "RGB", "RGBA"), ".bmp": ("L", "RGB"), ".ppm": ("RGB",), ".pgm": ("L",),
            ".jpg": ("L", "RGB"), ".jpeg": ("L", "RGB")}


def _check_paths(src: Path, dst: Path) -> None:
    if src.is_dir():
        raise ValueError(f"input {src} is a directory, not a file")
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    if dst.is_dir():
        raise ValueError(f"output {dst} is a directory; give a file name")
    if dst.exists() and (dst.resolve() == src.resolve() or src.samefile(dst)):
        raise ValueError(f"output {dst} is the input file; refusing to overwrite it")
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"output folder {dst.parent} does not exist")


def _write_atomically(dst: Path, write: Callable[[Path], None]) -> None:
    # A failure half-way (disk full, bad format, Ctrl-C) leaves any existing file untouched.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def compress_file(src: str | Path, dst: str | Path, quality: int = 3, model=None) -> int:
    """Read an image file, write ``.vlmb``; returns the number of bytes written.

    The image size is checked against the format's caps from the file header, before decoding.
    """
    from PIL import Image

    from ..data.folder import open_image

    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    with open_image(src, max_pixels=MAX_PIXELS) as im:
        w, h = im.size
        if w > MAX_SIDE or h > MAX_SIDE:
            raise ValueError(f"image {src} is {w}x{h}; a .vlmb file holds at most {MAX_SIDE} px a side")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {src}: {e}") from None
        data = encode_image(im, quality, model)
    _write_atomically(dst, lambda p: p.write_bytes(data))
    return len(data)


def decompress_file(src: str | Path, dst: str | Path, model=None) -> tuple[int, int]:
    """Read ``.vlmb``, write an image (format from the extension, PNG recommended); returns (W, H)."""
    from PIL import Image

    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    ext = dst.suffix.lower()
    if ext not in _FORMATS:
        raise ValueError(f"unknown output extension {dst.suffix!r} for {dst}; use one of {sorted(_FORMATS)}")
    a = decode_image(src.read_bytes(), model)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    if mode not in _FORMATS[ext]:
        raise ValueError(f"{ext} cannot hold a {mode} image (it has {'alpha' if 'A' in mode else 'colour'}); "
                         f"write .png instead")
    img = Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode)
    fmt = Image.registered_extensions().get(ext)
    _write_atomically(dst, lambda p: img.save(p, format=fmt))
    return a.shape[1], a.shape[0]
