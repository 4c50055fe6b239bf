"""Readers' own images (Kodak, CLIC, any folder), with clear errors for bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def load_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read an image file as an (H, W, C) uint8 array; ``ValueError`` if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None
    return arr if arr.ndim == 3 else arr[..., None]


class ImageFolder:
    """All images under a folder (recursively), sorted by path; unreadable files are skipped.

    Skipped files raise a warning each and are counted in ``skipped``; a missing folder, or
    one with no readable image, raises ``FileNotFoundError`` / ``ValueError``.
    """

    def __init__(self, root: str | Path, extensions: tuple[str, ...] = EXTENSIONS, min_size: int = 1):
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
                img = load_image(p)
            except ValueError as e:
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
        return self._images[i]

    def random_crops(self, n: int, size: int, seed: int = 0):
        """(n, 3, size, size) float tensor of random crops from images at least ``size`` px."""
        import torch

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
