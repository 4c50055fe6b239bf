"""Helpers for the chapter notebooks: a chapter's start (seeds, quiet warnings) and its runtime."""
from __future__ import annotations

import os
import time
import warnings

_T0: float | None = None
_CHAPTER: int | None = None


def start_chapter(number: int, seed: int = 0, quiet: bool = False) -> None:
    """Call in a chapter's first code cell: one torch thread, seeds, the chapter clock, and
    the versions and device it runs with (``vlmbook info``)."""
    global _T0, _CHAPTER
    import torch

    from .device import default_threads, environment_report, seed_everything

    _T0, _CHAPTER = time.perf_counter(), number
    # Numbers in the book must not depend on the reader's core count (see default_threads).
    torch.set_num_threads(default_threads())
    seed_everything(seed)
    if not quiet:
        print(environment_report())
    os.environ.setdefault("VLMBOOK_PROGRESS", "0")  # progress bars are for terminals, not pages
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_geometric")


def elapsed() -> float:
    """Seconds since :func:`start_chapter`."""
    if _T0 is None:
        raise RuntimeError("start_chapter() was not called")
    return time.perf_counter() - _T0


def report_runtime() -> None:
    """Print the chapter's measured runtime (its last cell)."""
    cpus = os.cpu_count()
    print(f"Chapter {_CHAPTER} executed in {elapsed():.0f} s on this machine ({cpus} CPU cores).")
