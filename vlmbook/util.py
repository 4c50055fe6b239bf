"""Small shared helpers: the one median timer (alone or interleaved) and the one step-seeded generator.

Every chapter that times code or draws a step's random batch calls these, so timings are measured
the same way everywhere and a step's data is a pure function of ``(seed, step)`` (exact resume).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping

import torch

# Mixes a run's seed with a step index: seeds 0, 1, 2 … give disjoint streams for the first million steps.
SEED_STRIDE = 1_000_003


def step_seed(seed: int, step: int, stride: int = SEED_STRIDE) -> int:
    """The integer seed of step ``step`` of a run seeded ``seed``: ``seed · stride + step``.

    ``stride`` other than :data:`SEED_STRIDE` exists only so trainers whose committed artifacts were
    drawn with an older constant (the codec's 100,003) keep reproducing them bit for bit.
    """
    for name, v in (("seed", seed), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    return seed * stride + step


def step_generator(seed: int, step: int, stride: int = SEED_STRIDE) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`step_seed` (batch ``step`` of a seeded run)."""
    return torch.Generator().manual_seed(step_seed(seed, step, stride))


def median_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_seconds_each(fns: Mapping[str, Callable[[], Any]], repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each named function, called in turn every round so load changes hit all alike."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not fns:
        raise ValueError("fns must name at least one function")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def median_seconds_pair(fa: Callable[[], Any], fb: Callable[[], Any], repeats: int = 5,
                        warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ``fa`` and ``fb`` timed alternately, so load changes hit both alike."""
    med = median_seconds_each({"a": fa, "b": fb}, repeats, warmup)
    return med["a"], med["b"]
