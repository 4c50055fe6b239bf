"""Classical codecs as a baseline: JPEG and WebP rate–distortion through Pillow (Chapter 1 §1.8)."""
from __future__ import annotations

import dataclasses
import io
from typing import Sequence

import numpy as np

from .metrics import ms_ssim, psnr

CODECS = {"jpeg": "JPEG", "webp": "WEBP"}


def pil_roundtrip(image: np.ndarray, codec: str = "jpeg", quality: int = 75) -> tuple[np.ndarray, int]:
    """Encode an (H, W, 3) uint8 image with Pillow and decode it: (decoded image, bytes)."""
    from PIL import Image

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {tuple(CODECS)}, got {codec!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=CODECS[codec], quality=int(quality))
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        dec = np.asarray(im.convert("RGB"))
    return dec, len(data)


@dataclasses.dataclass(frozen=True)
class RDPoint:
    """Mean bits per pixel and quality over a set of images at one codec setting."""

    codec: str
    quality: int
    bpp: float
    psnr: float
    ms_ssim: float


def pil_rd_curve(images: Sequence[np.ndarray], codec: str = "jpeg",
                 qualities: Sequence[int] = (10, 20, 30, 50, 70, 85, 95)) -> list[RDPoint]:
    """Rate–distortion points (mean bpp, PSNR in dB, MS-SSIM) over ``images`` for each quality."""
    if len(images) == 0:
        raise ValueError("need at least one image")
    points = []
    for q in qualities:
        bpps, ps, ms = [], [], []
        for img in images:
            dec, nbytes = pil_roundtrip(img, codec, q)
            bpps.append(8.0 * nbytes / (img.shape[0] * img.shape[1]))
            ps.append(psnr(img, dec))
            ms.append(ms_ssim(img, dec) if min(img.shape[:2]) > 160 else float("nan"))
        points.append(RDPoint(codec, int(q), float(np.mean(bpps)), float(np.mean(ps)), float(np.mean(ms))))
    return points
