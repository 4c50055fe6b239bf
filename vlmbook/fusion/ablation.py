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
import functools
import json
import time
from pathlib import Path

from .model import RECIPE, VLMConfig

OFF = {"cell_embed": "none", "layout": "image_first", "cite": False, "closed_answers": False, "qk_norm": False}
#: Variant name -> VLMConfig fields changed from ``VLMConfig.tiny()`` (which holds the recipe).
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "no_qk_norm": {"qk_norm": False},
    "no_cell_embed": {"cell_embed": "none"},
    "sincos_cells": {"cell_embed": "sincos"},
    "no_cite": {"cite": False},
    "image_first": {"layout": "image_first"},
    "open_answers": {"closed_answers": False},
    "full_prefix": {"mask": "full_prefix"},
    "curriculum": {},
    "curriculum_sincos": {"cell_embed": "sincos"},
    "curriculum_long": {},
    "curriculum_cite_cells": {"cite_cells": True},
    "curriculum_cellpool": {"compressor": "cells"},
    "pack4": {},
    "pack4_wide": {},
    "answer_only": dict(OFF),
}
#: Variant name -> DemoConfig fields changed from the run's (training levers, not model ones).
CURRICULUM = {"curriculum": 1000}
DEMO_VARIANTS: dict[str, dict] = {"curriculum": CURRICULUM, "curriculum_sincos": CURRICULUM, "curriculum_cite_cells": CURRICULUM,
                                   "curriculum_cellpool": CURRICULUM, "curriculum_long": {"curriculum": 2000},
                                   # four questions about one exhibit per sequence: as many questions per step
                                   # (16 sequences), or as many sequences (64, four times the questions)
                                   "pack4": {"pack": 4}, "pack4_wide": {"pack": 4, "batch_size": 256}}
SOURCES = ("oracle", "patch", "clip", "vq")


def variant_config(name: str, route: str = "continuous", source: str = "oracle", tokens: int = 0,
                   compressor: str = "") -> VLMConfig:
    """``VLMConfig.tiny()`` with variant ``name``'s levers and the image side of ``source`` (and, for the
    ``clip`` source, ``tokens`` image tokens M and Chapter 4's ``compressor`` if given: Chapter 7 §7.4).

    The discrete route reads Chapter 2's ``vq-tokenizer-cell`` (48-px exhibits, one code per cell)
    for every source but ``"patch"``, which keeps this chapter's k-means quantizer; with ``tokens``
    M = 1, 4 or 16 it reads the museum tokenizer of that code grid (``vq-tokenizer-m1`` …, 64 px).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {SOURCES}")
    if source == "vq" and route != "discrete":
        raise ValueError(f"source 'vq' (Chapter 2's tokenizer) gives codes: it needs route='discrete', got {route!r}")
    if route == "discrete" and source == "patch":  # k-means on 72-px exhibits (24-px cells of 4 × 4 sub-blocks)
        return VLMConfig.tiny().replace(route=route, image_side="patch", compressor="none", image_size=72,
                                        **VARIANTS[name])
    if route == "discrete":  # Chapter 2's tokenizer: its 3 × 3 code grid is the museum's cells
        from ..vq.tokenizer import TOKEN_ARTIFACTS, TOKEN_GRID_CONFIGS

        if compressor:
            raise ValueError(f"the discrete route's image tokens are Chapter 2's codes: no compressor, got {compressor!r}")
        if tokens and tokens not in TOKEN_ARTIFACTS:
            raise ValueError(f"the discrete route has tokenizers for M in {sorted(TOKEN_ARTIFACTS)}, got tokens={tokens}")
        tok = TOKEN_GRID_CONFIGS[tokens or 9]  # M = 1, 4, 16 (§7.4's sweep): a code grid of √M × √M
        return VLMConfig.tiny().replace(route=route, image_side="vq", compressor="none", grid=3,
                                        tokens=0 if tokens in (0, 9) else tokens, vq_artifact=TOKEN_ARTIFACTS[tokens or 9],
                                        image_size=tok.image_size, codebook_size=tok.codebook_size, **VARIANTS[name])
    if (tokens or compressor) and source != "clip":
        raise ValueError(f"tokens= and compressor= choose the clip source's image side, not {source!r}'s")
    cfg = VLMConfig.tiny().replace(route=route, **VARIANTS[name])
    if source == "clip" and (tokens or compressor):
        return cfg.replace(tokens=tokens, compressor=compressor or cfg.compressor)
    if source == "oracle":
        cfg = cfg.replace(image_side="features", compressor="none")
    elif source == "patch":
        cfg = cfg.replace(image_side="patch", compressor="none")
    return cfg


@functools.lru_cache(maxsize=4)
def _data(split: str, n: int, size: int, grid: int):
    from .data import museum_qa

    return museum_qa(split, n, size, grid=grid)


def run_cell(name: str, seed: int, steps: int, source: str = "oracle", route: str = "continuous",
             train_scenes: int = 2000, test_scenes: int = 200, eval_every: int = 0,
             save_dir: Path | None = None, return_model: bool = False, encoder_steps: int | None = None,
             tokens: int = 0, compressor: str = "", joint: bool = False):
    """Train one (variant, seed) on one thread and score it on held-out exhibits; returns the record
    (and saves the model under ``save_dir/<variant>-<source>-s<seed>`` if given). ``tokens``,
    ``compressor`` and ``joint`` (a joint warm-up read-out) are the token sweep's image side (§7.4):
    any of them warms the image side up in the run instead of loading ``clip-cells-tiny``."""
    from ..device import num_threads
    from .train import DemoConfig, train_route
    from .warmup import clip_encoder

    cfg = variant_config(name, route, source, tokens, compressor)
    demo = DemoConfig.tiny().replace(steps=steps, seed=seed, train_scenes=train_scenes, test_scenes=test_scenes,
                                     warmup=min(100, steps // 10), **DEMO_VARIANTS.get(name, {}))
    if encoder_steps is not None and encoder_steps != demo.encoder_steps:  # not the committed warm-up: run it
        demo = demo.replace(encoder_steps=encoder_steps, encoder_artifact="")
    if tokens or compressor or joint:  # another image side than the committed warm-up's
        demo = demo.replace(encoder_joint=joint, encoder_artifact="")
    with num_threads(1):
        train = _data("train", train_scenes, cfg.image_size, cfg.grid)
        test = _data("test", test_scenes, cfg.image_size, cfg.grid)
        t0 = time.perf_counter()
        # the image side's warm-up, timed apart (runs that share its settings share it, kept in memory)
        encoder = clip_encoder(cfg, demo, train, "cpu") if cfg.image_side == "clip" else None
        enc_secs = time.perf_counter() - t0
        vlm, _ = train_route(route, cfg, demo, train=train, device="cpu", eval_data=test, eval_every=eval_every,
                             encoder=encoder)
        secs = time.perf_counter() - t0
    if save_dir is not None:
        vlm.save_pretrained(Path(save_dir) / f"{name}-{source}-s{seed}")
    log = vlm.training_log
    rec = {"variant": name, "seed": seed, "steps": steps, "source": source, "route": route,
            "levers": {**{k: getattr(cfg, k) for k in ("cell_embed", "layout", "cite", "closed_answers", "mask",
                                                       "qk_norm")}, "curriculum": demo.curriculum, "pack": demo.pack},
            "batch_size": demo.batch_size,
            "image_side": cfg.image_side, "compressor": cfg.compressor, "image_tokens": cfg.image_tokens,
            "train_seconds": round(secs, 1), "encoder_seconds": round(enc_secs, 1), "threads": 1,
            "encoder_steps": demo.encoder_steps if source not in ("oracle", "vq", "patch") else 0,
            "encoder_lr": demo.encoder_lr if source == "clip" else None,
            "encoder_artifact": demo.encoder_artifact if source == "clip" else None,
            **({"encoder_joint": demo.encoder_joint} if source == "clip" else {}),
            **({"vq_artifact": cfg.vq_artifact, "image_size": cfg.image_size} if cfg.image_side == "vq" else {}),
            "steps_per_s": round(steps / secs, 2), "accuracy": log[-1], "log": log[:-1]}
    return (rec, vlm) if return_model else rec


def encoder_readout(compressor: str = "perceiver", encoder_lr: float = 3e-3, steps: int = 1500, seed: int = 0,
                    test_scenes: int = 500, tokens: int = 0, joint: bool = False) -> dict:
    """Warm up Chapter 4's ViT with ``compressor`` on fresh exhibits (one thread) and measure how well
    linear heads read each occupied cell's colour, shape and size on held-out exhibits. §5.7.
    ``tokens`` and ``joint`` give the token sweep's image side (§7.4): the same warm-up as its runs.

    The encoder half of the guide on its own: the language model can only name what these
    per-cell features say.
    """
    from ..data.museum import Museum
    from ..device import num_threads
    from .data import patch_labels
    from .train import DemoConfig
    from .warmup import museum_stream, train_clip_side

    cfg = VLMConfig.tiny().replace(compressor=compressor, tokens=tokens)
    demo = DemoConfig.tiny()
    with num_threads(1):
        t0 = time.perf_counter()
        _, _, probe = train_clip_side(cfg, steps, demo.batch_size, encoder_lr, seed, "cpu",
                                      stream=museum_stream(cfg.image_size, cfg.grid, start=2000), joint=joint)
        secs = time.perf_counter() - t0
        images = Museum("test", size=cfg.image_size).tensors(0, test_scenes)
        read = probe.readout(images, patch_labels("test", test_scenes, cfg.grid))
    extra = {"image_tokens": cfg.image_tokens, "joint": probe.joint} if tokens or joint else {}
    return {"compressor": compressor, **extra, "compressor_depth": cfg.compressor_depth, "encoder_lr": encoder_lr,
            "steps": steps, "seed": seed, "batch_size": demo.batch_size, "test_scenes": test_scenes, "threads": 1,
            "train_seconds": round(secs, 1), **{k: round(v, 2) for k, v in read.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", nargs="?", choices=sorted(VARIANTS))
    ap.add_argument("seed", type=int, nargs="?", default=0)
    ap.add_argument("--jobs", type=Path, default=None,
                    help="a file of 'variant seed source [route]' lines, read as they come (one process, data "
                         "and a shared warm-up loaded once)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--source", choices=SOURCES, default="oracle")
    ap.add_argument("--route", default="continuous")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--save-dir", type=Path, default=None)
    ap.add_argument("--readout", default=None, metavar="COMPRESSOR:LR,...",
                    help="instead of the LM: warm up the encoder with each compressor at each learning rate "
                         "(e.g. cells:1e-3,perceiver:3e-3) and record its per-cell read-out")
    ap.add_argument("--encoder-steps", type=int, default=1500, help="warm-up steps of the image side (clip source, --readout)")
    ap.add_argument("--tokens", type=int, default=0, help="image tokens M (clip source, or the discrete route: 1, 4, 9, 16; 0 = one per cell)")
    ap.add_argument("--compressor", default="", help="Chapter 4's compressor of the clip source (default: perceiver)")
    ap.add_argument("--joint", action="store_true", help="warm up with heads that read all image tokens at once")
    a = ap.parse_args(argv)
    if a.readout:
        for item in a.readout.split(","):
            comp, lr = item.split(":")
            _emit(encoder_readout(comp, float(lr), a.encoder_steps, a.seed, tokens=a.tokens, joint=a.joint), a.out)
        return
    if a.jobs is None:
        _emit(run_cell(a.variant, a.seed, a.steps, a.source, a.route, eval_every=a.eval_every, save_dir=a.save_dir,
                       encoder_steps=a.encoder_steps, tokens=a.tokens, compressor=a.compressor, joint=a.joint), a.out)
        return
    done = 0
    while True:
        lines = [ln.split() for ln in a.jobs.read_text().splitlines() if ln.strip()]
        if done >= len(lines) or lines[done][0] == "stop":
            return
        v, s, src = lines[done][:3]
        route = lines[done][3] if len(lines[done]) > 3 else a.route
        _emit(run_cell(v, int(s), a.steps, src, route, eval_every=a.eval_every, save_dir=a.save_dir,
                       encoder_steps=a.encoder_steps, tokens=a.tokens, compressor=a.compressor, joint=a.joint), a.out)
        done += 1


def _emit(rec: dict, out: Path | None) -> None:
    line = json.dumps(rec)
    print(line, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
