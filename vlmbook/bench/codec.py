"""Benchmark ``codec``: our scale hyperprior vs CompressAI's ``ScaleHyperprior`` trained the same
way, and both vs JPEG and WebP, by BD-rate on the eval photos (real file sizes from each codec's
own entropy coder).

"The same way": one model trained at ``BASE_LAMBDA`` for ``TrainSpec.tiny()`` (8,000 steps of
eight 128-px crops), then fine-tuned to each lambda for ``TrainSpec.finetune()`` (2,000 steps),
with the same data, seeds and loop (:func:`vlmbook.codec.models.train_codec`). Ours are the
committed ``codec-base`` / ``codec-q<k>`` artifacts (their builders are exactly this procedure,
one thread, bit-reproducible); CompressAI's are trained here and cached under
``$VLMBOOK_CACHE/codec-bench/`` (about 25 CPU-core minutes in all).

Last line: ``codec: <bd-rate> % BD-rate vs JPEG`` (target <= -20 %, and within +-5 % of CompressAI).
``--quick`` trains nothing: CompressAI's models are measured only if already cached.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from . import BenchResult


def _folder(name: str) -> Path:
    from ..codec.models import TrainSpec
    from ..hub import cache_dir

    a, b = TrainSpec.tiny(), TrainSpec.finetune()
    return cache_dir() / "codec-bench" / f"base{a.steps}-ft{b.steps}-crop{a.crop}-b{a.batch}-seed{a.seed}" / name


def _compressai():
    from compressai.models import ScaleHyperprior

    from ..codec.models import CodecConfig

    cfg = CodecConfig.tiny()
    return ScaleHyperprior(cfg.N, cfg.M)


def _load(folder: Path):
    from safetensors.torch import load_file

    model = _compressai()
    state = load_file(str(folder / "weights.safetensors"))
    model.load_state_dict(state, strict=False)
    model.update(force=True)
    model.load_state_dict(state)
    return model.eval(), json.loads((folder / "meta.json").read_text())["train_seconds"]


def _train_cached(folder: Path, lmbda: float, spec, init=None):
    from safetensors.torch import save_file

    from ..codec.models import train_codec
    from ..device import num_threads

    if (folder / "weights.safetensors").is_file():
        return _load(folder)
    torch.manual_seed(spec.seed)
    model = _compressai()
    if init is not None:
        model.load_state_dict(init.state_dict())
    t0 = time.perf_counter()
    with num_threads(1):  # as our artifact builders do: reproducible, and fair to both models
        train_codec(model, lmbda, spec, desc=f"compressai {folder.name}")
    secs = time.perf_counter() - t0
    model.update(force=True)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"train_seconds": secs, "spec": dataclasses.asdict(spec)}))
    return model.eval(), secs


def compressai_trained(q: int) -> tuple[torch.nn.Module, float]:
    """CompressAI's ScaleHyperprior at quality q trained as our artifacts are (cached); (model, seconds)."""
    from ..codec.models import BASE_LAMBDA, LAMBDAS, TrainSpec

    base, s0 = _train_cached(_folder("compressai-base"), BASE_LAMBDA, TrainSpec.tiny())
    model, s1 = _train_cached(_folder(f"compressai-q{q}"), LAMBDAS[q - 1], TrainSpec.finetune(), init=base)
    return model, s0 / len(LAMBDAS) + s1


def _cached(q: int) -> bool:
    return all((_folder(n) / "weights.safetensors").is_file() for n in ("compressai-base", f"compressai-q{q}"))


def run(quick: bool = False) -> BenchResult:
    """Train (or load) 4 lambdas of both models, measure real file sizes, report BD-rates."""
    from ..codec.metrics import LOW_RATE_QUALITIES, bd_rate, codec_point, compressai_point, pillow_rd
    from ..codec.models import BASE_LAMBDA, LAMBDAS, CodecConfig, HyperpriorCodec, TrainSpec
    from ..data import eval_images
    from ..hub import load_artifact

    images = eval_images(256)
    ours, theirs, secs = [], [], 0.0
    for q, lmbda in enumerate(LAMBDAS, start=1):
        ours.append({"lambda": lmbda, **codec_point(load_artifact(f"codec-q{q}", HyperpriorCodec), images)})
        if quick and not _cached(q):
            continue
        n, s = compressai_trained(q)
        secs += s
        theirs.append({"lambda": lmbda, **compressai_point(n, images)})
    jpeg = pillow_rd(images, "JPEG", LOW_RATE_QUALITIES)
    webp = pillow_rd(images, "WEBP", LOW_RATE_QUALITIES)

    def curve(pts):
        return [p["bpp"] for p in pts], [p["psnr"] for p in pts]

    table = {"train": {"base": dataclasses.asdict(TrainSpec.tiny()), "base_lambda": BASE_LAMBDA,
                       "finetune": dataclasses.asdict(TrainSpec.finetune())},
             "config": CodecConfig.tiny().to_dict(),
             "compressai_train_seconds_per_rate_point": secs / max(1, len(theirs)),
             "ours": ours, "compressai": theirs, "jpeg": jpeg, "webp": webp}
    bd = {}
    pairs = {"ours_vs_jpeg": (jpeg["bpp"], jpeg["psnr"], *curve(ours)),
             "webp_vs_jpeg": (jpeg["bpp"], jpeg["psnr"], webp["bpp"], webp["psnr"])}
    if theirs:
        pairs["compressai_vs_jpeg"] = (jpeg["bpp"], jpeg["psnr"], *curve(theirs))
        pairs["ours_vs_compressai"] = (*curve(theirs), *curve(ours))
    for name, args in pairs.items():
        try:
            bd[name] = bd_rate(*args)
        except ValueError as e:
            bd[name] = f"n/a: {e}"
    table["bd_rate_percent"] = bd
    table["bd_rate_psnr_range_vs_jpeg"] = [max(min(jpeg["psnr"]), min(p["psnr"] for p in ours)),
                                           min(max(jpeg["psnr"]), max(p["psnr"] for p in ours))]
    head = bd["ours_vs_jpeg"] if isinstance(bd["ours_vs_jpeg"], float) else float("nan")
    return BenchResult("codec", head, "% BD-rate vs JPEG", table, fmt="{:.1f}")


if __name__ == "__main__":  # python -m vlmbook.bench.codec train: CompressAI's models, ahead of the benchmark
    if sys.argv[1:] == ["train"]:
        for q in range(1, 5):
            print(f"compressai q{q}: {compressai_trained(q)[1]:.0f} s", flush=True)
    else:
        raise SystemExit("usage: python -m vlmbook.bench.codec train")
