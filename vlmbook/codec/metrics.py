"""Rate–distortion evaluation: real file sizes, JPEG / WebP anchors and the Bjøntegaard delta rate (Chapter 3 §3.9)."""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch

from ..rd.metrics import psnr


def bd_rate(rate_a: Sequence[float], psnr_a: Sequence[float], rate_b: Sequence[float],
            psnr_b: Sequence[float]) -> float:
    """Bjøntegaard delta rate of curve B against anchor A, in percent (negative = B saves bits).

    Fits log-rate as a cubic polynomial of PSNR for each curve, integrates both over the PSNR
    range they share, and turns the mean log-rate gap into a percentage (Bjøntegaard 2001).
    """
    ra, pa, rb, pb = (np.asarray(v, np.float64) for v in (rate_a, psnr_a, rate_b, psnr_b))
    for name, r, p in (("A", ra, pa), ("B", rb, pb)):
        if r.ndim != 1 or r.shape != p.shape or r.size < 4:
            raise ValueError(f"curve {name} needs >= 4 (rate, psnr) points of equal length")
        if np.any(r <= 0) or not np.all(np.isfinite(p)):
            raise ValueError(f"curve {name} needs positive rates and finite PSNRs")
    deg = 3
    fa = np.polyfit(pa, np.log(ra), deg)
    fb = np.polyfit(pb, np.log(rb), deg)
    lo, hi = max(pa.min(), pb.min()), min(pa.max(), pb.max())
    if hi <= lo:
        raise ValueError("the two curves do not overlap in PSNR")
    ia, ib = np.polyint(fa), np.polyint(fb)
    avg = ((np.polyval(ib, hi) - np.polyval(ib, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)
    return float((math.exp(avg) - 1) * 100)


def pillow_rd(images: Sequence[np.ndarray], fmt: str = "JPEG",
              qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 85, 95)) -> dict[str, list[float]]:
    """Mean bpp and PSNR over uint8 (H, W, 3) images at each Pillow quality (JPEG or WEBP)."""
    from PIL import Image

    if fmt not in ("JPEG", "WEBP"):
        raise ValueError(f"fmt must be 'JPEG' or 'WEBP', got {fmt!r}")
    bpp, ps = [], []
    for q in qualities:
        b, p = [], []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format=fmt, quality=int(q))
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            b.append(len(buf.getvalue()) * 8 / (img.shape[0] * img.shape[1]))
            p.append(psnr(img, dec))
        bpp.append(float(np.mean(b)))
        ps.append(float(np.mean(p)))
    return {"quality": [int(q) for q in qualities], "bpp": bpp, "psnr": ps}


#: JPEG qualities sampled densely at the low rates where the tiny learned codecs operate (the
#: anchor for BD-rates: a cubic fit is only trustworthy near its points).
LOW_RATE_QUALITIES: tuple[int, ...] = (3, 4, 5, 6, 8, 10, 15, 20)


#: A sweep from the lowest qualities Pillow allows to high quality: about 0.2 to 2.5 bpp for
#: JPEG and WebP on the 256-px eval photos (the RD plots of Chapter 3 §3.9).
WIDE_QUALITIES: tuple[int, ...] = (0, 1, 2, 3, 5, 8, 12, 20, 30, 45, 60, 75, 90)


def bd_rate_near(anchor: dict[str, list[float]], rate: Sequence[float], psnr: Sequence[float],
                 margin_db: float = 1.5) -> tuple[float, float, float]:
    """BD-rate (%) of a curve against an anchor sweep, fitting the anchor only near the curve. §3.9.

    A cubic through a whole 0.2-2.5 bpp sweep fits the low-rate end badly, so the anchor's points
    within ``margin_db`` of the curve's PSNR range are used (at least the 4 nearest). Returns
    (BD-rate, low and high PSNR of the overlap); raises ValueError when the curves do not overlap.
    """
    ap, ar = np.asarray(anchor["psnr"], np.float64), np.asarray(anchor["bpp"], np.float64)
    lo, hi = float(min(psnr)), float(max(psnr))
    dist = np.maximum(lo - ap, 0) + np.maximum(ap - hi, 0)
    keep = dist <= margin_db
    if keep.sum() < 4:
        keep = np.zeros_like(keep)
        keep[np.argsort(dist, kind="stable")[:4]] = True
    bd = bd_rate(ar[keep], ap[keep], rate, psnr)
    return bd, max(lo, float(ap[keep].min())), min(hi, float(ap[keep].max()))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1)[None].float().div(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8 (rounded)."""
    return (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def codec_point(model, images: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean real-file bpp and PSNR of one of our codecs (through compress / decompress)."""
    from .models import pad_to

    b, p = [], []
    for img in images:
        x = to_tensor(img)
        streams, zs = model.compress(pad_to(x))
        rec = to_uint8(model.decompress(streams, zs)[..., :img.shape[0], :img.shape[1]])
        b.append(sum(len(s) for s in streams) * 8 / (img.shape[0] * img.shape[1]))
        p.append(psnr(img, rec))
    return {"bpp": float(np.mean(b)), "psnr": float(np.mean(p))}


@torch.no_grad()
def compressai_point(net, images: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean real-file bpp and PSNR of a CompressAI model (its own compress / decompress)."""
    from .models import pad_to

    net.eval()
    net.update(force=True)
    b, p = [], []
    for img in images:
        x = pad_to(to_tensor(img))
        enc = net.compress(x)
        rec = net.decompress(enc["strings"], enc["shape"])["x_hat"][..., :img.shape[0], :img.shape[1]]
        b.append(sum(len(s[0]) for s in enc["strings"]) * 8 / (img.shape[0] * img.shape[1]))
        p.append(psnr(img, to_uint8(rec)))
    return {"bpp": float(np.mean(b)), "psnr": float(np.mean(p))}
