"""The chapter's central experiment: which levers make the tiny guide find the object (Chapter 5 §5.7).

Each variant changes how the task is posed, at equal steps and seeds: citations first
(``cite``), cell embeddings on image tokens (``cell_embed``), question before image (``layout``),
one token per answer (``closed_answers``), a fully bidirectional prefix (``mask``). The source of
the image tokens is either perfect per-cell attributes (``oracle``) or an image encoder.

Run one cell of the table on one thread, appending a JSON line::

    python -m vlmbook.fusion.ablation recipe 0 --steps 3000 --source oracle --out bench/results/vlm_ablation.jsonl
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .model import RECIPE, VLMConfig

OFF = {"cell_embed": "none", "layout": "image_first", "cite": False, "closed_answers": False}
#: Variant name -> VLMConfig fields changed from ``VLMConfig.tiny()`` (which holds the recipe).
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "no_cell_embed": {"cell_embed": "none"},
    "no_cite": {"cite": False},
    "image_first": {"layout": "image_first"},
    "open_answers": {"closed_answers": False},
    "full_prefix": {"mask": "full_prefix"},
    "learned_cells": {"cell_embed": "learned"},
    "answer_only": dict(OFF),
}
SOURCES = ("oracle", "patch", "clip")


def variant_config(name: str, route: str = "continuous", source: str = "oracle") -> VLMConfig:
    """``VLMConfig.tiny()`` with variant ``name``'s levers and the image side of ``source``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    cfg = VLMConfig.tiny().replace(route=route, **VARIANTS[name])
    if source == "oracle":
        cfg = cfg.replace(image_side="features")
    elif source == "clip":
        cfg = cfg.replace(image_side="clip", compressor="cells", image_size=64)
    return cfg


def run_cell(name: str, seed: int, steps: int, source: str = "oracle", route: str = "continuous",
             train_scenes: int = 2000, test_scenes: int = 200, eval_every: int = 0) -> dict:
    """Train one (variant, seed) on one thread and score it on held-out exhibits; returns the record."""
    from ..device import num_threads
    from .data import museum_qa
    from .train import DemoConfig, train_route

    cfg = variant_config(name, route, source)
    demo = DemoConfig.tiny().replace(steps=steps, seed=seed, train_scenes=train_scenes, test_scenes=test_scenes,
                                     warmup=min(100, steps // 10))
    with num_threads(1):
        train = museum_qa("train", train_scenes, cfg.image_size, grid=cfg.grid)
        test = museum_qa("test", test_scenes, cfg.image_size, grid=cfg.grid)
        t0 = time.perf_counter()
        vlm, _ = train_route(route, cfg, demo, train=train, device="cpu", eval_data=test, eval_every=eval_every)
        secs = time.perf_counter() - t0
    log = vlm.training_log
    return {"variant": name, "seed": seed, "steps": steps, "source": source, "route": route,
            "levers": {k: getattr(cfg, k) for k in ("cell_embed", "layout", "cite", "closed_answers", "mask")},
            "image_tokens": cfg.image_tokens, "train_seconds": round(secs, 1), "threads": 1,
            "steps_per_s": round(steps / secs, 2), "accuracy": log[-1], "log": log[:-1]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("seed", type=int)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--source", choices=SOURCES, default="oracle")
    ap.add_argument("--route", default="continuous")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    rec = run_cell(a.variant, a.seed, a.steps, a.source, a.route, eval_every=a.eval_every)
    line = json.dumps(rec)
    print(line)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with a.out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
