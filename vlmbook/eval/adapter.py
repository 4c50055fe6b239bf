"""The one place that knows how a vlmbook model answers: load it, describe it, ask it (Chapter 7 §7.1).

Everything else in :mod:`vlmbook.eval` works on prediction rows. When Chapter 5's
``VisionLanguageModel`` changes its API, only :func:`load_model`, :func:`model_info` and
:func:`predict` need updating.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..fusion.grounding import parse_citations


@dataclasses.dataclass
class Prediction:
    """One answer: raw output, answer text without citations, cited patches and timings (ms, tokens/s)."""

    output: str
    answer: str
    cited: list[int]
    encode_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None


@dataclasses.dataclass
class EvalBatch:
    """One image (3, H, W) in [0, 1] and the questions asked about it."""

    image: torch.Tensor
    questions: list[str]


def parse_output(text: str) -> tuple[str, list[int]]:
    """``'[CITE:<p_3><p_4>] red'`` -> ``('red', [3, 4])``: Chapter 5's :func:`~vlmbook.fusion.grounding.parse_citations`
    (``<p_k>`` patch tokens, anywhere in the text). §7.1."""
    if not isinstance(text, str):
        raise TypeError(f"parse_output needs a string, got {type(text).__name__}")
    return parse_citations(text)


def load_model(source: str | Path, device: str = "cpu") -> Any:
    """A ``VisionLanguageModel`` from a saved folder, or a registered artifact name (``vlm-tiny``)."""
    from ..fusion import VisionLanguageModel
    from ..hub import load_artifact

    path = Path(source)
    if path.is_dir():
        return VisionLanguageModel.from_pretrained(path, device=device).eval()
    if path.exists() or "/" in str(source):
        raise FileNotFoundError(f"{source} is not a model folder")
    return load_artifact(str(source), VisionLanguageModel, device=device).eval()


def model_info(model: Any) -> dict[str, Any]:
    """Route, compressor, image tokens M, grid, image size and config hash of a model. §7.1."""
    cfg = model.config
    cfg_json = json.dumps(cfg.to_dict(), sort_keys=True)
    compressor = getattr(model, "compressor", None)
    return {
        "route": str(getattr(cfg, "route", "unknown")),
        "compressor": "none" if compressor is None else type(compressor).__name__,
        "image_tokens": int(cfg.image_tokens),
        "grid": int(cfg.grid),
        "image_size": int(cfg.image_size),
        "seed": int(getattr(cfg, "seed", 0)),
        "config_hash": hashlib.sha256(cfg_json.encode()).hexdigest()[:16],
        "device": str(next(model.parameters()).device),
    }


def _now() -> float:
    return time.perf_counter()


def can_cache_prefix(model: Any) -> bool:
    """Whether the model can reuse one image prefix across questions (image-first layout, and a mask
    that keeps the image from seeing the question). §5.6."""
    return model.config.layout == "image_first" and model.config.mask != "full_prefix"


@torch.no_grad()
def predict(model: Any, batch: EvalBatch, max_new_tokens: int = 24, timing: bool = True) -> list[Prediction]:
    """Greedy answers to every question about one (3, H, W) image, with encode / first-token / decoding times. §7.1.

    An image-first model computes its image prefix once and reuses it for every question (prompt
    caching); the time to first token is then that prefix time plus the question's first decoding
    step. A question-first model (``VLMConfig.tiny``) cannot: each question runs the whole prompt,
    image included, and its first decoding step is its time to first token.
    """
    if not isinstance(batch, EvalBatch) or batch.image.ndim != 3:
        raise ValueError("predict needs an EvalBatch holding one (3, H, W) image")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    dev = next(model.parameters()).device
    img = batch.image[None].to(dev)
    encode_ms = None
    if timing:
        t0 = _now()
        if getattr(model, "quantizer", None) is not None:
            model.quantizer.encode(img)
        else:
            model.image_features(img)
        encode_ms = 1000 * (_now() - t0)
    prefix, prefix_ms = None, 0.0
    if can_cache_prefix(model):
        t0 = _now()
        prefix = model.cache_prefix(img)
        prefix_ms = 1000 * (_now() - t0)
    out = []
    for question in batch.questions:
        q = torch.tensor([model.encode_text(question) + [model.ids["assistant"]]], device=dev)
        ttft = tps = None
        if timing:
            t0 = _now()
            model.generate(img, q, max_new_tokens=1, prefix=prefix)
            first = _now() - t0
            ttft = prefix_ms + 1000 * first
        t0 = _now()
        ids = model.generate(img, q, max_new_tokens=max_new_tokens, prefix=prefix)[0].tolist()
        total = _now() - t0
        text = model.decode_answer(ids)
        n = len(ids) if model.ids["end"] not in ids else ids.index(model.ids["end"]) + 1
        if timing and n > 1:
            tps = (n - 1) / max(total - first, 1e-9)
        answer, cited = parse_output(text)
        out.append(Prediction(text, answer, cited, encode_ms, ttft, tps))
    return out


def peak_memory_mb(device: str | torch.device = "cpu") -> float:
    """Peak memory so far: the accelerator's allocator on CUDA, else the process's max RSS (MB)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:  # Windows
        return float("nan")


def versions() -> dict[str, str]:
    """Versions of the packages an evaluation depends on."""
    import platform

    import numpy
    import transformers

    from .. import __version__

    return {"vlmbook": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__}
