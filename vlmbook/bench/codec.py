"""Benchmark ``codec``: our scale hyperprior vs CompressAI's ``ScaleHyperprior`` trained the same
way (same data, steps, lambdas, loop: :func:`vlmbook.codec.models.train_codec`), and both vs JPEG
and WebP, by BD-rate on the eval photos (real file sizes from each codec's own entropy coder).

Last line: ``codec: <bd-rate> % BD-rate vs JPEG`` (target <= -20 %, and within +-5 % of CompressAI).

Trained models are cached under ``$VLMBOOK_CACHE/codec-bench/<spec>/`` so the two trainings
can be run ahead, in parallel: ``python -m vlmbook.bench.codec train ours`` and
``... train compressai`` (about 6 CPU-core minutes per model, 8 models). Ours are exactly the
committed ``codec-q<k>`` artifacts (same builder, spec and seed); ``export DIR`` writes them.
``--quick`` trains nothing: it measures the committed artifacts (and CompressAI's models only
if they are already cached) in well under two minutes.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from . import BenchResult


def _spec(quick: bool = False):
    from ..codec.models import TrainSpec

    return TrainSpec()


def _folder(which: str, q: int, spec) -> Path:
    from ..hub import cache_dir

    return cache_dir() / "codec-bench" / f"steps{spec.steps}-crop{spec.crop}-b{spec.batch}-seed{spec.seed}" / f"{which}-q{q}"


def _make(which: str, lmbda: float):
    from ..codec.models import CodecConfig, HyperpriorCodec

    cfg = CodecConfig.tiny().replace(lmbda=lmbda)
    if which == "ours":
        return HyperpriorCodec(cfg)
    from compressai.models import ScaleHyperprior

    return ScaleHyperprior(cfg.N, cfg.M)


def trained(which: str, q: int, spec) -> tuple[torch.nn.Module, float]:
    """Model ``which`` ('ours' or 'compressai') at quality q, from the cache or trained now."""
    from safetensors.torch import load_file, save_file

    from ..codec.models import LAMBDAS, train_codec

    lmbda = LAMBDAS[q - 1]
    folder = _folder(which, q, spec)
    torch.manual_seed(spec.seed)
    model = _make(which, lmbda)
    if (folder / "weights.safetensors").is_file():
        state = load_file(str(folder / "weights.safetensors"))
        if which == "compressai":
            model.load_state_dict(state, strict=False)
            model.update(force=True)
            model.load_state_dict(state)
        else:  # coding tables are rebuilt from the weights (they depend on nothing else)
            keep = {k: v for k, v in state.items() if not k.split(".")[-1].startswith(("_", "scale_table"))}
            model.load_state_dict(keep, strict=False)
            model.update()
        return model.eval(), json.loads((folder / "meta.json").read_text())["train_seconds"]
    from ..device import num_threads

    t0 = time.perf_counter()
    with num_threads(1):  # as the artifact builder does: reproducible, and fair to both models
        train_codec(model, lmbda, spec, desc=f"{which} q{q}")
    secs = time.perf_counter() - t0
    if which == "ours":
        model.update()
    else:
        model.update(force=True)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"train_seconds": secs, "spec": dataclasses.asdict(spec)}))
    return model.eval(), secs


def run(quick: bool = False) -> BenchResult:
    """Train (or load) 4 lambdas of both models, measure real file sizes, report BD-rates."""
    from ..codec.metrics import LOW_RATE_QUALITIES, bd_rate, codec_point, compressai_point, pillow_rd
    from ..codec.models import LAMBDAS, CodecConfig
    from ..data import eval_images

    spec = _spec()
    images = eval_images(256)
    ours, theirs, secs = [], [], {"ours": 0.0, "compressai": 0.0}
    for q, lmbda in enumerate(LAMBDAS, start=1):
        if quick:  # --quick: the committed artifacts (same spec); CompressAI only if already cached
            from ..codec.models import HyperpriorCodec
            from ..hub import load_artifact

            ours.append({"lambda": lmbda, **codec_point(load_artifact(f"codec-q{q}", HyperpriorCodec), images)})
            if (_folder("compressai", q, spec) / "weights.safetensors").is_file():
                n, s = trained("compressai", q, spec)
                theirs.append({"lambda": lmbda, **compressai_point(n, images)})
            continue
        m, s = trained("ours", q, spec)
        secs["ours"] += s
        ours.append({"lambda": lmbda, **codec_point(m, images)})
        n, s = trained("compressai", q, spec)
        secs["compressai"] += s
        theirs.append({"lambda": lmbda, **compressai_point(n, images)})
    jpeg = pillow_rd(images, "JPEG", LOW_RATE_QUALITIES)
    webp = pillow_rd(images, "WEBP", LOW_RATE_QUALITIES)

    def curve(pts):
        return [p["bpp"] for p in pts], [p["psnr"] for p in pts]

    table = {"train": dataclasses.asdict(spec), "config": CodecConfig.tiny().to_dict(),
             "train_seconds": secs, "ours": ours, "compressai": theirs, "jpeg": jpeg, "webp": webp}
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


def export_artifacts(dest: str | Path, spec=None) -> list[Path]:
    """Write our cached full-length models as ``dest/codec-q<k>-v1`` artifact folders."""
    from ..hub import artifact_specs

    spec = spec or _spec(False)
    out = []
    for q in range(1, 5):
        model, _ = trained("ours", q, spec)
        folder = Path(dest) / f"codec-q{q}-v1"
        model.save_pretrained(folder)
        (folder / "artifact.json").write_text(
            json.dumps(dataclasses.asdict(artifact_specs()[f"codec-q{q}"]), indent=2) + "\n")
        out.append(folder)
    return out


if __name__ == "__main__":  # python -m vlmbook.bench.codec train ours|compressai | export DIR
    if len(sys.argv) == 3 and sys.argv[1] == "export":
        print(export_artifacts(sys.argv[2]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "train":
        spec = _spec()
        for q in range(1, 5):
            _, s = trained(sys.argv[2], q, spec)
            print(f"{sys.argv[2]} q{q}: {s:.0f} s", flush=True)
    else:
        raise SystemExit("usage: python -m vlmbook.bench.codec train ours|compressai | export DIR")
