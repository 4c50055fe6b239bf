"""How many torch threads the book's small models should use: one training step timed at 1 and
2 threads, interleaved, with the machine's load recorded (the default is ``device.default_threads``).

A small model's step is a few milliseconds; with two threads on two cores that are busy with
other work, torch's worker threads wait for each other at every operation, so the step can be
many times slower than on one thread. This benchmark measures that on the machine it runs on.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

from ..device import num_threads
from . import BenchResult


def _small_model(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.Tensor]:
    """A 2-layer, width-128 transformer (the book's ``tiny`` scale) with AdamW and a batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, opt, torch.randn(32, 40, 128, generator=g)


def _step_seconds(model, opt, x) -> float:
    t0 = time.perf_counter()
    loss = model(x).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def run(quick: bool = False, rounds: int | None = None) -> BenchResult:
    """Median step time per thread count over interleaved rounds; headline = t(2) / t(1)."""
    rounds = rounds or (5 if quick else 20)
    model, opt, x = _small_model()
    times: dict[int, list[float]] = {1: [], 2: []}
    load_before = os.getloadavg()
    for _ in range(rounds):
        for n in (1, 2):  # interleaved, so both see the same load
            with num_threads(n):
                _step_seconds(model, opt, x)  # warm this thread count's pool
                times[n].append(min(_step_seconds(model, opt, x) for _ in range(3)))
    med = {n: statistics.median(t) for n, t in times.items()}
    table = {"median_step_ms": {n: round(1e3 * v, 3) for n, v in med.items()},
             "rounds": rounds, "cpu_count": os.cpu_count(),
             "load_average_before": [round(v, 2) for v in load_before],
             "load_average_after": [round(v, 2) for v in os.getloadavg()]}
    return BenchResult("threads", med[2] / med[1], "x step time with 2 threads vs 1", table, fmt="{:.2f}")
