"""Readers' own images (Kodak, CLIC, any folder), with clear errors for bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


#: Largest image :func:`load_image` decodes by default: 2**26 pixels (8192 x 8192), about
#: 200 MB as RGB uint8. The size is read from the file header and checked *before* decoding.
MAX_PIXELS = 1 << 26
#: Pillow modes that hold more than 8 bits a sample, and their full-scale value.
_WIDE_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0}


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """Open an image file and check its header size against ``max_pixels`` (nothing decoded yet).

    Returns an open Pillow image (use it in a ``with`` block); raises ``ValueError`` for files
    Pillow cannot identify and for images larger than the cap. Chapter 1 §1.8.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise TypeError(f"max_pixels must be a positive int, got {max_pixels!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    # Our own cap below replaces Pillow's decompression-bomb check, which raises its own error
    # type; opening reads only the header, so lifting Pillow's limit here allocates nothing.
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    w, h = im.size
    if w < 1 or h < 1 or w * h > max_pixels:
        im.close()
        raise ValueError(f"image {path} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                         f"(pass max_pixels= to raise it)")
    return im


def to_uint8(im) -> np.ndarray:
    """A Pillow image with more than 8 bits a sample (16-bit, 32-bit int, float) -> (H, W) uint8, scaled to full range."""
    a = np.asarray(im, np.float64)
    if im.mode == "F":
        lo, hi = float(np.nanmin(a, initial=0.0)), float(np.nanmax(a, initial=1.0))
        scale = 255.0 / (1.0 if 0.0 <= lo and hi <= 1.0 else max(hi, 1e-12))
    else:
        scale = 255.0 / _WIDE_MODES.get(im.mode, 65535.0)
    return np.clip(np.round(np.nan_to_num(a) * scale), 0, 255).astype(np.uint8)


def load_image(path: str | Path, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an (H, W, C) uint8 array; ``ValueError`` if it cannot be decoded or is
    larger than ``max_pixels`` (checked from the header, before decoding). 16-bit images are
    scaled to 8 bits (65535 -> 255). Chapter 1 §1.8."""
    from PIL import Image

    if mode not in ("RGB", "RGBA", "L", "LA"):
        raise ValueError(f"mode must be one of 'RGB', 'RGBA', 'L', 'LA', got {mode!r}")
    path = Path(path)
    with open_image(path, max_pixels) as im:
        try:
            im.load()
            if im.mode in _WIDE_MODES or im.mode == "F":
                grey = Image.fromarray(to_uint8(im), "L")
                arr = np.asarray(grey.convert(mode))
            else:
                arr = np.asarray(im.convert(mode))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
    return arr if arr.ndim == 3 else arr[..., None]


class ImageFolder:
    """All images under a folder (recursively), sorted by path; unreadable files are skipped.

    Skipped files (unreadable, or over ``max_pixels``, which is checked from the header before
    decoding) raise a warning each and are counted in ``skipped``; a missing folder, or one with
    no readable image, raises ``FileNotFoundError`` / ``ValueError``.
    """

    def __init__(self, root: str | Path, extensions: tuple[str, ...] = EXTENSIONS, min_size: int = 1,
                 max_pixels: int = MAX_PIXELS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder does not exist: {self.root}")
        candidates = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        if not candidates:
            raise ValueError(f"image folder {self.root} contains no files with extensions {extensions}")
        self.paths: list[Path] = []
        self.skipped: list[Path] = []
        self._images: list[np.ndarray] = []
        for p in candidates:
            try:
                img = load_image(p, max_pixels=max_pixels)
            except (ValueError, OSError) as e:
                warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
                self.skipped.append(p)
                continue
            if min(img.shape[:2]) < min_size:
                warnings.warn(f"skipping {p}: smaller than {min_size} px", stacklevel=2)
                self.skipped.append(p)
                continue
            self.paths.append(p)
            self._images.append(img)
        if not self.paths:
            raise ValueError(f"image folder {self.root} has no readable image ({len(self.skipped)} skipped)")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"ImageFolder index must be an int, got {i!r}")
        return self._images[i]

    def random_crops(self, n: int, size: int, seed: int = 0):
        """(n, 3, size, size) float tensor of random crops from images at least ``size`` px."""
        import torch

        for name, v in (("n", n), ("size", size), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if n < 1 or size < 1:
            raise ValueError(f"need n >= 1 and size >= 1, got n={n}, size={size}")
        pool = [im for im in self._images if min(im.shape[:2]) >= size]
        if not pool:
            raise ValueError(f"no image in {self.root} is at least {size} px on its shorter side")
        rng = np.random.default_rng(seed)
        out = np.empty((n, size, size, 3), np.uint8)
        for k in range(n):
            im = pool[rng.integers(len(pool))]
            y = rng.integers(0, im.shape[0] - size + 1)
            x = rng.integers(0, im.shape[1] - size + 1)
            out[k] = im[y:y + size, x:x + size, :3]
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
