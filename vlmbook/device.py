"""Device choice, seeding and mixed precision (shared by every training loop)."""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU (``VLMBOOK_DEVICE`` overrides)."""
    prefer = prefer or os.environ.get("VLMBOOK_DEVICE")
    if prefer is not None:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay bit-reproducible)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


#: Environment variable that overrides :func:`default_threads`.
THREADS_ENV = "VLMBOOK_THREADS"


def default_threads() -> int:
    """Intra-op threads for chapters, benchmarks and artifact builders: 1 unless ``VLMBOOK_THREADS``.

    One thread, because the book's models are small: measured on a 2-core machine, two torch
    threads on two busy cores made a training step 10–50x slower than one thread (Chapter 7),
    and results then do not depend on the machine's core count.
    """
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (training, timing, artifact builders)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_threads needs a positive int, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


#: Packages whose versions every chapter and benchmark record prints.
REPORTED_PACKAGES = ("transformers", "peft", "compressai", "numpy", "tokenizers", "accelerate")


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine() -> dict[str, object]:
    """Platform, versions, CPU count, torch threads, load average and device, for records."""
    import platform

    from . import __version__

    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "vlmbook": __version__,
        "torch": torch.__version__,
        **{name: _version(name) for name in REPORTED_PACKAGES},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def environment_report() -> str:
    """The lines ``vlmbook info`` prints and every chapter shows in its first cell."""
    info = describe_machine()
    lines = [f"{k}: {v}" for k, v in info.items()]
    lines.append(f"selected device: {get_device()}")
    return "\n".join(lines)
