"""The bundled photographs: scikit-image's and scikit-learn's colour samples (no download).

A fixed split: codecs train on crops of ``TRAIN_PHOTOS`` and are measured on ``EVAL_PHOTOS``
(Chapter 1 §1.8 and Chapter 3).
"""
from __future__ import annotations

import functools

import numpy as np

#: Photos used for training crops (never for evaluation).
TRAIN_PHOTOS: tuple[str, ...] = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "china")
#: Photos held out for rate–distortion evaluation.
EVAL_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "flower")


@functools.lru_cache(maxsize=16)
def load_photo(name: str) -> np.ndarray:
    """One bundled photo as an (H, W, 3) uint8 array."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name in TRAIN_PHOTOS + EVAL_PHOTOS:
        import skimage.data

        img = getattr(skimage.data, name)()
    else:
        raise ValueError(f"unknown photo {name!r}; bundled: {TRAIN_PHOTOS + EVAL_PHOTOS}")
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    img.setflags(write=False)  # cached and shared: callers must copy before editing
    return img


def _resize(img: np.ndarray, short: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    s = short / min(h, w)
    size = (max(short, round(w * s)), max(short, round(h * s)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def eval_images(size: int = 256) -> list[np.ndarray]:
    """The evaluation photos, shorter side resized to ``size`` and centre-cropped square."""
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    out = []
    for name in EVAL_PHOTOS:
        img = _resize(load_photo(name), size)
        h, w = img.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(img[y:y + size, x:x + size].copy())
    return out


@functools.lru_cache(maxsize=8)
def _pyramid(name: str) -> tuple[np.ndarray, ...]:
    img = load_photo(name)
    short = min(img.shape[:2])
    levels = [img]
    for f in (2, 3):  # natural-image statistics at several scales
        if short // f >= 64:
            levels.append(_resize(img, short // f))
    return tuple(levels)


def random_crops(n: int, size: int = 64, seed: int = 0, split: str = "train"):
    """(n, 3, size, size) float32 tensor in [0, 1] of random crops with flips, deterministic in ``seed``."""
    import torch

    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    for name, v in (("n", n), ("size", size), ("seed", seed)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"random_crops: {name} must be an int, got {v!r}")
    if n < 1 or size < 8:
        raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
    if seed < 0:
        raise ValueError(f"random_crops: seed must be >= 0, got {seed}")
    names = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
    largest = max(min(lv.shape[:2]) for name in names for lv in _pyramid(name))
    if size > largest:
        raise ValueError(f"random_crops: size={size} is larger than every bundled {split} photo "
                         f"(the largest crop they allow is {largest} px)")
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        levels = [lv for lv in _pyramid(names[rng.integers(len(names))]) if min(lv.shape[:2]) >= size]
        img = levels[rng.integers(len(levels))]
        y = rng.integers(0, img.shape[0] - size + 1)
        x = rng.integers(0, img.shape[1] - size + 1)
        crop = img[y:y + size, x:x + size]
        out[k] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
