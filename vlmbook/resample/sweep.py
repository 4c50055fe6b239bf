"""How long the token-budget probe of Chapter 4 §4.6 must train: a measured curve, stored as a small record.

Training probes until their accuracy stops rising takes longer than a chapter may run on a CPU,
so the measured record is committed (``vlmbook/artifacts/probe-sweep-v2/sweep.json``)
and rebuilt by one command::

    python -m vlmbook.resample.sweep            # writes the record (about two hours of one core)

The record holds the training curve — probe accuracy (per question group too) against training
steps for the reference (all patch tokens) and each compressor at M = 16 — and the step count
chosen from it: the first at which doubling the steps adds less than ``tol`` accuracy for all
(or the longest run, when none does). It also holds the budget table that §4.6 plots: three
compressors at every budget M it can produce, after the chapter's 300 steps (``"budget"``; rebuilt
alone, in about two minutes, by ``python -m vlmbook.resample.sweep --budget``). Every point is its
own seeded run, so points built in separate processes are the same as one run's.
``tests/test_resample.py`` retrains points of both and checks them; the chapter retrains four.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from ..device import num_threads
from .budget import ProbeConfig, ProbeData, probe_accuracy, probe_features, valid_budgets

VERSION = 2
RECORD = Path(__file__).resolve().parents[1] / "artifacts" / f"probe-sweep-v{VERSION}" / "sweep.json"
CURVE_STEPS = (300, 600, 1200, 2400, 4800, 9600, 19200)
CURVE_KINDS = (("all", 64), ("perceiver", 16), ("qformer", 16), ("pixel_shuffle", 16), ("tokenlearner", 16),
               ("tome", 16))
BUDGET_KINDS = ("perceiver", "pixel_shuffle", "tome")
BUDGET_MS = (1, 4, 16, 64)


def converged_steps(curve: dict[str, list[float]], steps: Sequence[int], tol: float = 0.005) -> int:
    """The first step count after which doubling adds < ``tol`` accuracy for every curve (else the last). §4.6."""
    if any(len(v) != len(steps) for v in curve.values()):
        raise ValueError("every curve needs one accuracy per step count")
    for i in range(len(steps) - 1):
        if all(v[i + 1] - v[i] < tol for v in curve.values()):
            return int(steps[i])
    return int(steps[-1])


def _probe_data(encoder, cfg: ProbeConfig) -> tuple[ProbeData, ProbeData]:
    from ..vision import load_clip_tiny

    encoder = encoder or load_clip_tiny()
    return probe_features(encoder, "train", cfg.n_train), probe_features(encoder, "test", cfg.n_test)


def _budget_rows(train: ProbeData, test: ProbeData, cfg: ProbeConfig, kinds: Sequence[str], ms: Sequence[int],
                 progress: bool) -> list[dict]:
    rows = []
    for kind in kinds:
        for m in valid_budgets(kind, train.features.shape[1], ms):
            rows.append({"steps": int(cfg.steps), **_row(probe_accuracy(kind, m, train, test, cfg))})
            if progress:
                print(kind, m, rows[-1]["accuracy"], flush=True)
    return rows


def build_sweep(encoder=None, cfg: ProbeConfig | None = None, curve_steps: Sequence[int] = CURVE_STEPS,
                kinds: Sequence[tuple[str, int]] = CURVE_KINDS, tol: float = 0.005, progress: bool = True) -> dict:
    """Probe accuracy against training steps for each (kind, M); the converged step count; the budget table
    of :func:`build_budget` on the same features. §4.6."""
    cfg = cfg or ProbeConfig.tiny()
    t0 = time.perf_counter()
    with num_threads(1):
        train, test = _probe_data(encoder, cfg)
        rows: dict[str, list[dict]] = {}
        for kind, m in kinds:
            key = f"{kind}-{m}"
            rows[key] = [{"steps": int(s), **_row(probe_accuracy(kind, m, train, test, cfg.replace(steps=s)))}
                         for s in curve_steps]
            if progress:
                print(key, [r["accuracy"] for r in rows[key]], flush=True)
        budget = _budget_rows(train, test, cfg, BUDGET_KINDS, BUDGET_MS, progress)
    curve = {k: [r["accuracy"] for r in v] for k, v in rows.items()}
    steps = converged_steps(curve, curve_steps, tol)
    return {"version": VERSION, "probe_config": cfg.to_dict(), "curve_steps": [int(s) for s in curve_steps],
            "curve": curve, "rows": rows, "tolerance": tol, "steps": steps,
            "seconds": round(time.perf_counter() - t0, 1), "budget": budget}


def build_budget(encoder=None, cfg: ProbeConfig | None = None, kinds: Sequence[str] = BUDGET_KINDS,
                 ms: Sequence[int] = BUDGET_MS, progress: bool = True) -> list[dict]:
    """Probe accuracy of each compressor at every budget in ``ms`` it can produce, after ``cfg.steps``. §4.6."""
    cfg = cfg or ProbeConfig.tiny()
    with num_threads(1):
        return _budget_rows(*_probe_data(encoder, cfg), cfg, kinds, ms, progress)


def _row(r: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}


def load_sweep(path: str | Path = RECORD) -> dict:
    """The committed sweep record (see :func:`build_sweep`). §4.6."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep record at {path}; build it with `python -m vlmbook.resample.sweep`")
    return json.loads(path.read_text())


def reproduce_row(record: dict, kind: str, m: int, steps: int, train: ProbeData, test: ProbeData) -> dict:
    """Retrain the ``steps``-step point of ``record``'s (kind, M) curve with its stored probe config. §4.6."""
    cfg = ProbeConfig(**record["probe_config"]).replace(steps=steps)
    return {"steps": int(steps), **_row(probe_accuracy(kind, m, train, test, cfg))}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlmbook.resample.sweep")
    p.add_argument("--budget", action="store_true", help="rebuild only the budget table of the committed record")
    args = p.parse_args(argv)
    if args.budget:
        rec = load_sweep()
        rec["budget"] = build_budget(cfg=ProbeConfig(**rec["probe_config"]))
    else:
        rec = build_sweep()
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"written {RECORD}; converged at {rec['steps']} steps")


if __name__ == "__main__":
    main()
